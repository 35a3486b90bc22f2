"""The embedded store: FAISS indexes over passage and sentence vectors, and BM25 in process.

Files in a build folder: ``dense.faiss`` (passages), ``sentences.faiss``
(sentences, the same index type), ``keyword.npz`` + ``keyword.vocab.json``.
Sentences are searched through their own index and fetched by id
(``reconstruct_batch``), never scanned as one matrix per query.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.keyword import KeywordIndex
from rag.store.base import top_pairs

FILES = ("dense.faiss", "sentences.faiss", "keyword.npz", "keyword.vocab.json")
INDEX_TYPES = ("flat", "hnsw")


def faiss_index(vectors: np.ndarray, kind: str) -> Any:
    """An inner-product FAISS index of ``kind`` holding ``vectors``.

    Raises:
        ValueError: unknown index type.
    """
    import faiss

    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128  # recall near flat's at the candidate depths retrieval asks for
    else:
        raise ValueError(f"Unknown faiss index type '{kind}'. Choose one of {list(INDEX_TYPES)}")
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class FaissStore:
    """Passages, sentences and BM25 of one build folder, all in this process."""

    kind = "faiss"

    def __init__(self, passages: Any, sentences: Any, keyword: KeywordIndex) -> None:
        self.passages = passages
        self.sentences = sentences
        self.keyword = keyword

    @staticmethod
    def write(folder: Path, chunk_vecs: np.ndarray, sent_vecs: np.ndarray, keyword: KeywordIndex,
              index_type: str) -> dict[str, Any]:
        """Write the store's files into ``folder``; returns what the manifest records."""
        import faiss

        faiss.write_index(faiss_index(chunk_vecs, index_type), str(folder / "dense.faiss"))
        faiss.write_index(faiss_index(sent_vecs, index_type), str(folder / "sentences.faiss"))
        keyword.save(folder, "keyword")
        return {"kind": "faiss", "index_type": index_type}

    def counts(self) -> tuple[int, int, int]:
        """(passages, sentences, dimension), for validation against the manifest."""
        if self.sentences.d != self.passages.d:
            return self.passages.ntotal, self.sentences.ntotal, -1
        return self.passages.ntotal, self.sentences.ntotal, self.passages.d

    def _search(self, index: Any, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        k = min(k, index.ntotal)
        if k <= 0:
            return []
        scores, ids = index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
        return top_pairs(scores[0], ids[0])

    def passage_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self._search(self.passages, vector, k)

    def sentence_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self._search(self.sentences, vector, k)

    @staticmethod
    def _vectors(index: Any, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, index.d), dtype=np.float32)
        return index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def passage_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self._vectors(self.passages, ids)

    def sentence_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self._vectors(self.sentences, ids)

    def passage_scores(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        return self.passage_vectors(ids) @ vector

    def sentence_scores(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        return self.sentence_vectors(ids) @ vector

    def check(self) -> None:
        """In process: always available."""

    def close(self) -> None:
        """Nothing to release."""
