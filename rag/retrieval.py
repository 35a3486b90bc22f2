"""Keyword (BM25) and dense retrieval over a store, and their fusion.

Each retriever fetches ``settings.candidates`` passages, more than the final
``top_k``; fusion is weighted (scores scaled to [0, 1] per retriever) or
reciprocal-rank. Weights are tuned on the dev split of the gold set.

The dense score of a passage is the better of its own similarity and its best
sentence's. Nothing scans all sentences: two nearest-neighbour searches in the
store (passages, and sentences mapped to the passages holding them) give the
candidates and the similarities of the best sentences; the candidates' own
similarities are then fetched by id. A sentence outside the sentence search's
top ``SENTENCES_PER_CANDIDATE * candidates`` counts as not matching (it scores
below every sentence returned), so query cost follows the candidate count, not
the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterable

from rag import lang
from rag.config import Settings
from rag.index import IndexData
from rag.text import match_key
from rag.types import Hit, Query

MODES = ("hybrid", "keyword", "dense")
# A cited sentence is found in an answer's text by its first this-many characters (match form):
# enough to be unique, and the writer's trimming ("…") keeps them.
CITED_PREFIX_CHARS = 12
# Sentences searched per passage candidate: the best sentences of the top passages must come
# back for their passages to score as a full scan would.
SENTENCES_PER_CANDIDATE = 5


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
        self._prefixes: dict[str, set[int]] | None = None  # built on the first follow-up

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
            cands, passages, sentences = self.dense_candidates(query, n)
            # Weighted fusion also needs keyword-only hits' dense scores: one fetch for both.
            all_dense = self.dense_scores(query, cands | ({i for i, _ in kw} if weighted else set()),
                                          passages, sentences)
            dn = sorted(((i, all_dense[i]) for i in cands), key=lambda p: (-p[1], p[0]))[:n]
        near = self.near_passages(query.near) if query.near else set()
        if near and weighted:
            all_dense.update(self.dense_scores(query, near - set(all_dense), {}, {}))
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
            for i in set(kw_rank) | set(dn_rank) | near:
                k_part = kw_scores.get(i, 0.0) / (top_kw or 1.0)
                d = all_dense[i]  # keyword-only hits too, from the same computation
                d_part = (d - floor) / (ceil - floor) if ceil > floor else 1.0
                fused[i] = w * k_part + (1 - w) * max(d_part, 0.0)
        bonus = 0.0
        if near and fused:
            # Where the conversation is: near passages join the candidates and rank higher (their
            # scores, which the judge reads, stay what retrieval gave).
            bonus = self.settings.follow_up_bonus * max(fused.values())
            for i in near:
                fused.setdefault(i, 0.0)
        order = sorted(fused, key=lambda i: (-(fused[i] + (bonus if i in near else 0.0)), i))[:top_k]
        chunks = self.data.chunks
        return [Hit(chunks[i], float(fused[i]), kw_rank.get(i), dn_rank.get(i)) for i in order]

    def cited_sentences(self, answer: str) -> set[int]:
        """Sentences of the index that ``answer`` quotes (found by the opening characters of the
        sentence or of one of its clauses: a shortened answer shows a sentence from a clause on)."""
        if self._prefixes is None:
            prefixes: dict[str, set[int]] = {}
            for s in self.data.sentences:
                for clause in lang.CLAUSE.finditer(s.text):
                    key = match_key(s.text[clause.start() :])
                    if len(key) >= CITED_PREFIX_CHARS:
                        prefixes.setdefault(key[:CITED_PREFIX_CHARS], set()).add(s.sent_id)
            self._prefixes = prefixes
        key = match_key(answer)
        found: set[int] = set()
        for start in range(len(key) - CITED_PREFIX_CHARS + 1):
            found.update(self._prefixes.get(key[start : start + CITED_PREFIX_CHARS], ()))
        return found

    def near_sentences(self, answer: str) -> set[int]:
        """Sentences within ``follow_up_window`` sentences (same document) of one ``answer`` cites."""
        sentences = self.data.sentences
        w = self.settings.follow_up_window
        near: set[int] = set()
        for sid in self.cited_sentences(answer):
            doc = sentences[sid].doc_id
            near.update(other for other in range(max(sid - w, 0), min(sid + w + 1, len(sentences)))
                        if sentences[other].doc_id == doc)
        return near

    def near_passages(self, answer: str) -> set[int]:
        """Passages holding a sentence near one ``answer`` cites (:meth:`near_sentences`)."""
        return {p for sid in self.near_sentences(answer) for p in self._owners.get(sid, ())}

    def keyword(self, query: Query, k: int) -> list[tuple[int, float]]:
        return self.data.keyword.search(query.tokens, k, query.token_weights)

    def dense_candidates(self, query: Query, k: int) -> tuple[set[int], dict[int, float], dict[int, float]]:
        """Passages near the query or holding a sentence near it; the passage and sentence
        similarities the two searches returned."""
        store = self.data.store
        passages = dict(store.passage_search(query.vector, k))
        sentences = dict(store.sentence_search(query.vector, k * SENTENCES_PER_CANDIDATE))
        ids = set(passages)
        for sid in sentences:
            ids.update(self._owners.get(sid, ()))
        return ids, passages, sentences

    def dense_scores(self, query: Query, ids: Iterable[int], passages: dict[int, float],
                     sentences: dict[int, float]) -> dict[int, float]:
        """Each passage's dense score: the better of its own similarity and its best sentence's
        among ``sentences`` (the sentence search's results).

        Own similarities missing from ``passages`` are scored by the store by id.
        """
        ids = sorted(set(ids))
        unknown = [i for i in ids if i not in passages]
        own = dict(passages)
        if unknown:
            own.update(zip(unknown, self.data.store.passage_scores(query.vector, unknown).tolist(), strict=True))
        chunks = self.data.chunks
        return {
            i: max([own[i], *(sentences[s] for s in chunks[i].sent_ids if s in sentences)])
            for i in ids
        }

    def dense(self, query: Query, k: int) -> list[tuple[int, float]]:
        """Top ``k`` passages by :meth:`dense_scores`, best first."""
        ids, passages, sentences = self.dense_candidates(query, k)
        scores = self.dense_scores(query, ids, passages, sentences)
        return sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]
