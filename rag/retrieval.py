"""Keyword (BM25) and dense retrieval over a store, and their fusion.

Each retriever fetches ``settings.candidates`` passages, more than the final
``top_k``; fusion is weighted (scores scaled to [0, 1] per retriever) or
reciprocal-rank. Weights are tuned on the dev split of the gold set.

The dense score of a passage is the better of its own similarity and its best
sentence's. Nothing scans all sentences: candidates come from two nearest-
neighbour searches in the store (passages, and sentences mapped to the
passages holding them), then each candidate is scored exactly from its own
vectors, fetched by id. Query cost therefore follows the candidate count, not
the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterable

from rag.config import Settings
from rag.index import IndexData
from rag.types import Hit, Query

MODES = ("hybrid", "keyword", "dense")
# Sentences fetched per passage candidate: a passage holds ~6, and the best sentences of
# the top passages must all come back for the candidate set to match a full scan.
SENTENCES_PER_CANDIDATE = 4


class Retriever:
    """Retrieves and fuses passages from one loaded index."""

    def __init__(self, data: IndexData, settings: Settings) -> None:
        self.data = data
        self.settings = settings
        # sentence id -> the passages holding it (overlap puts a sentence in two).
        owners: dict[int, list[int]] = {}
        for c in data.chunks:
            for sid in c.sent_ids:
                owners.setdefault(sid, []).append(c.chunk_id)
        self._owners = owners

    def retrieve(self, query: Query, top_k: int, mode: str = "hybrid") -> list[Hit]:
        """Best ``top_k`` passages for the query.

        Raises:
            ValueError: unknown mode.
            rag.store.base.StoreUnavailable: the store did not answer.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode '{mode}'. Choose one of {list(MODES)}")
        n = self.settings.candidates
        kw = self.keyword(query, n) if mode in ("hybrid", "keyword") else []
        weighted = mode == "hybrid" and self.settings.fusion != "rrf"
        all_dense: dict[int, float] = {}
        dn: list[tuple[int, float]] = []
        if mode in ("hybrid", "dense"):
            cands = self.dense_candidates(query, n)
            # Weighted fusion also needs keyword-only hits' dense scores: one fetch for both.
            all_dense = self.dense_scores(query, cands | ({i for i, _ in kw} if weighted else set()))
            dn = sorted(((i, all_dense[i]) for i in cands), key=lambda p: (-p[1], p[0]))[:n]
        kw_rank = {i: r for r, (i, _) in enumerate(kw, start=1)}
        dn_rank = {i: r for r, (i, _) in enumerate(dn, start=1)}
        fused: dict[int, float] = {}
        if not weighted:
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
            for i in set(kw_rank) | set(dn_rank):
                k_part = kw_scores.get(i, 0.0) / (top_kw or 1.0)
                d = all_dense[i]  # keyword-only hits too, from the same computation
                d_part = (d - floor) / (ceil - floor) if ceil > floor else 1.0
                fused[i] = w * k_part + (1 - w) * max(d_part, 0.0)
        order = sorted(fused, key=lambda i: (-fused[i], i))[:top_k]
        chunks = self.data.chunks
        return [Hit(chunks[i], float(fused[i]), kw_rank.get(i), dn_rank.get(i)) for i in order]

    def keyword(self, query: Query, k: int) -> list[tuple[int, float]]:
        return self.data.keyword.search(query.tokens, k, query.token_weights)

    def dense_candidates(self, query: Query, k: int) -> set[int]:
        """Passages near the query, or holding a sentence near it (two searches in the store)."""
        store = self.data.store
        ids = {i for i, _ in store.passage_search(query.vector, k)}
        for sid, _ in store.sentence_search(query.vector, k * SENTENCES_PER_CANDIDATE):
            ids.update(self._owners.get(sid, ()))
        return ids

    def dense_scores(self, query: Query, ids: Iterable[int]) -> dict[int, float]:
        """Exact dense score of each passage: the better of its own similarity and its best sentence's.

        The passages' and their sentences' vectors are fetched by id, so the cost
        follows ``len(ids)``, not the size of the index.
        """
        ids = sorted(set(ids))
        if not ids:
            return {}
        chunks = self.data.chunks
        store = self.data.store
        own = store.passage_vectors(ids) @ query.vector
        sent_ids = sorted({sid for i in ids for sid in chunks[i].sent_ids})
        sent_score = dict(zip(sent_ids, (store.sentence_vectors(sent_ids) @ query.vector).tolist(), strict=True))
        return {
            i: max([float(o), *(sent_score[s] for s in chunks[i].sent_ids)])
            for i, o in zip(ids, own, strict=True)
        }

    def dense(self, query: Query, k: int) -> list[tuple[int, float]]:
        """Top ``k`` passages by :meth:`dense_scores`, best first."""
        scores = self.dense_scores(query, self.dense_candidates(query, k))
        return sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]
