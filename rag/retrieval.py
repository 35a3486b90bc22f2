"""Keyword (BM25 over jieba tokens) and dense (FAISS) retrieval, and their fusion.

Each retriever fetches ``settings.candidates`` passages, more than the final
``top_k``; fusion is weighted (scores scaled to [0, 1] per retriever) or
reciprocal-rank. Weights are tuned on the dev split of the gold set.
"""

from __future__ import annotations

import numpy as np

from rag.config import Settings
from rag.index import IndexData
from rag.types import Hit, Query

MODES = ("hybrid", "keyword", "dense")


class Retriever:
    """Retrieves and fuses passages from one loaded index."""

    def __init__(self, data: IndexData, settings: Settings) -> None:
        self.data = data
        self.settings = settings
        # Flattened chunk -> sentence membership, for a per-chunk max with reduceat.
        members = [sid for c in data.chunks for sid in c.sent_ids]
        sizes = [len(c.sent_ids) for c in data.chunks]
        self._members = np.asarray(members, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def retrieve(self, query: Query, top_k: int, mode: str = "hybrid") -> list[Hit]:
        """Best ``top_k`` passages for the query.

        Raises:
            ValueError: unknown mode.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode '{mode}'. Choose one of {list(MODES)}")
        n = self.settings.candidates
        kw = self.keyword(query, n) if mode in ("hybrid", "keyword") else []
        all_dense = self.dense_scores(query) if mode in ("hybrid", "dense") else None
        dn = self.dense(query, n, all_dense) if all_dense is not None else []
        kw_rank = {i: r for r, (i, _) in enumerate(kw, start=1)}
        dn_rank = {i: r for r, (i, _) in enumerate(dn, start=1)}
        fused: dict[int, float] = {}
        if self.settings.fusion == "rrf" or mode != "hybrid":
            k = self.settings.rrf_k
            w = self.settings.keyword_weight if mode == "hybrid" else 0.5
            for i, r in kw_rank.items():
                fused[i] = fused.get(i, 0.0) + 2 * w / (k + r)
            for i, r in dn_rank.items():
                fused[i] = fused.get(i, 0.0) + 2 * (1 - w) / (k + r)
            # Single-retriever modes keep that retriever's own scores for abstention.
            if mode == "keyword":
                fused = {i: s / (kw[0][1] or 1.0) for i, s in kw}
            elif mode == "dense":
                fused = dict(dn)
        else:
            w = self.settings.keyword_weight
            top_kw = kw[0][1] if kw else 1.0
            kw_scores = dict(kw)
            # Scaled by the dense candidates' range; a passage missing from the keyword list scores 0 there.
            floor = dn[-1][1] if dn else 0.0
            ceil = dn[0][1] if dn else 1.0
            assert all_dense is not None  # hybrid computes every passage's dense score
            for i in set(kw_rank) | set(dn_rank):
                k_part = kw_scores.get(i, 0.0) / (top_kw or 1.0)
                d = float(all_dense[i])  # keyword-only hits too, from the same computation
                d_part = (d - floor) / (ceil - floor) if ceil > floor else 1.0
                fused[i] = w * k_part + (1 - w) * max(d_part, 0.0)
        order = sorted(fused, key=lambda i: (-fused[i], i))[:top_k]
        chunks = self.data.chunks
        return [Hit(chunks[i], float(fused[i]), kw_rank.get(i), dn_rank.get(i)) for i in order]

    def keyword(self, query: Query, k: int) -> list[tuple[int, float]]:
        return self.data.keyword.search(query.tokens, k, query.token_weights)

    def dense_scores(self, query: Query) -> np.ndarray:
        """Every passage's dense score: the better of its own similarity and its best sentence's.

        A question usually matches one sentence more closely than the passage
        around it. Sentence vectors are precomputed, so this is one matrix-vector
        product plus one FAISS search over the passage vectors.
        """
        n = len(self.data.chunks)
        sent = self.data.sentence_vectors @ query.vector
        combined = np.maximum.reduceat(sent[self._members], self._starts)
        k = min(self.settings.candidates, n)
        scores, ids = self.data.dense.search(query.vector.reshape(1, -1).astype(np.float32), k)
        for i, score in zip(ids[0], scores[0], strict=True):
            if i >= 0:
                combined[i] = max(combined[i], score)
        return combined

    def dense(self, query: Query, k: int, scores: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` passages by :meth:`dense_scores`, best first."""
        combined = self.dense_scores(query) if scores is None else scores
        k = min(k, len(combined))
        top = np.argpartition(-combined, k - 1)[:k]
        top = top[np.argsort(-combined[top], kind="stable")]
        return [(int(i), float(combined[i])) for i in top]
