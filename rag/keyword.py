"""BM25 keyword index over token lists, stored as a sparse matrix.

Scores are precomputed per (passage, term), so a query costs one sparse
column sum. The tokenizer is injected by the caller (build and query use the
same :class:`rag.text.Tokenizer`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import sparse


class KeywordIndex:
    """Okapi BM25 (k1, b) with a precomputed passage-by-term weight matrix."""

    def __init__(self, weights: sparse.csc_matrix, vocab: dict[str, int]) -> None:
        self.weights = weights
        self.vocab = vocab
        # Document frequency is the count of non-zeros in each column.
        n = weights.shape[0]
        df = np.diff(weights.indptr).astype(np.float32)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        self.max_idf = float(np.log(1.0 + (n - 0.5) / 1.5)) if n else 1.0

    def token_idf(self, token: str) -> float:
        """IDF of a token; an unseen token is as rare as a token seen once."""
        col = self.vocab.get(token)
        return self.max_idf if col is None else float(self.idf[col])

    @classmethod
    def build(cls, docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> KeywordIndex:
        vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(docs), dtype=np.float32)
        for i, tokens in enumerate(docs):
            lengths[i] = len(tokens)
            for token, tf in Counter(tokens).items():
                rows.append(i)
                cols.append(vocab.setdefault(token, len(vocab)))
                tfs.append(tf)
        n = len(docs)
        tf = np.asarray(tfs, dtype=np.float32)
        col = np.asarray(cols, dtype=np.int64)
        row = np.asarray(rows, dtype=np.int64)
        df = np.bincount(col, minlength=len(vocab)).astype(np.float32)
        idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        avgdl = float(lengths.mean()) if n else 1.0
        norm = k1 * (1.0 - b + b * lengths[row] / max(avgdl, 1e-9))
        w = idf[col] * tf * (k1 + 1.0) / (tf + norm)
        matrix = sparse.csc_matrix((w, (row, col)), shape=(n, len(vocab)), dtype=np.float32)
        return cls(matrix, vocab)

    def scores(self, tokens: Sequence[str], weights: Sequence[float] | None = None) -> np.ndarray:
        """BM25 score of every passage for the query tokens.

        A repeated token counts once, with its largest weight (default 1).
        """
        best: dict[int, float] = {}
        for i, token in enumerate(tokens):
            col = self.vocab.get(token)
            if col is not None:
                w = 1.0 if weights is None else float(weights[i])
                best[col] = max(best.get(col, 0.0), w)
        if not best:
            return np.zeros(self.weights.shape[0], dtype=np.float32)
        cols = sorted(best)
        sub = self.weights[:, cols]
        return np.asarray(sub @ np.asarray([best[c] for c in cols], dtype=np.float32)).ravel()

    def search(
        self, tokens: Sequence[str], k: int, weights: Sequence[float] | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` (passage index, score) with a positive score, best first."""
        scores = self.scores(tokens, weights)
        k = min(k, len(scores))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, folder: Path, name: str) -> None:
        sparse.save_npz(folder / f"{name}.npz", self.weights.tocsr())
        (folder / f"{name}.vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path, name: str) -> KeywordIndex:
        weights = sparse.load_npz(folder / f"{name}.npz").tocsc()
        vocab = json.loads((folder / f"{name}.vocab.json").read_text())
        return cls(weights, vocab)
