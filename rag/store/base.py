"""The store seam: what retrieval needs from wherever passage and sentence vectors live.

A store answers four questions, all by integer id (a passage's ``chunk_id``, a
sentence's ``sent_id``): the nearest passages to a vector, the nearest
sentences, the best BM25 passages for a keyword query, and the vectors of given
passages or sentences. Nothing in it scans every sentence: the reader and the
exact dense rescoring fetch vectors by id, so both stores grow the same way.

Two implementations: :class:`rag.store.faiss_store.FaissStore` (embedded, the
default) and :class:`rag.store.milvus_store.MilvusStore` (Milvus Lite by file
path, a Milvus server or cluster by URL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

STORES = ("faiss", "milvus")
REBUILD_HINT = "Run `make index` (or `rag index rebuild`) to build it."


class IndexNotReady(RuntimeError):
    """The index is missing, corrupt or does not match the settings. The message says what to run."""


class StoreUnavailable(IndexNotReady):
    """The store cannot be reached or refused a request; the message says what to check.

    A subclass of :class:`IndexNotReady`, so the API answers 503 (not 500) and
    the service reports it on ``/health`` until the store answers again.
    """


class KeywordSearch(Protocol):
    """BM25 over passages, and the weight of a word (the reader's coverage uses it)."""

    def search(self, tokens: Sequence[str], k: int, weights: Sequence[float] | None = None) -> list[tuple[int, float]]: ...

    def token_idf(self, token: str) -> float: ...


class Store(Protocol):
    """Vectors and keyword search of one built index."""

    kind: str
    keyword: KeywordSearch

    def passage_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Nearest ``k`` passages by inner product, best first."""
        ...

    def sentence_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Nearest ``k`` sentences by inner product, best first."""
        ...

    def passage_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Vectors of these passages, in this order."""
        ...

    def sentence_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Vectors of these sentences, in this order."""
        ...

    def passage_scores(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """Inner product of ``vector`` with these passages' vectors, in this order."""
        ...

    def sentence_scores(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """Inner product of ``vector`` with these sentences' vectors, in this order."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` when the store cannot answer now."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SentenceVectors:
    """``data.sentence_vectors[ids]``: sentence vectors fetched by id from the store, not a matrix in memory."""

    store: Store
    count: int

    def __getitem__(self, ids: Sequence[int]) -> np.ndarray:
        return self.store.sentence_vectors(list(ids))

    def __len__(self) -> int:
        return self.count


def top_pairs(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    """(id, score) pairs from one row of a FAISS-style search, dropping the -1 padding."""
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]
