"""The Embedder: a local sentence-transformers model, loaded lazily, never at import.

Owns the offline environment for the model (no hub access), the weights
fingerprint written to the manifest, and normalised float32 vectors.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_WEIGHT_SUFFIXES = (".bin", ".safetensors")


def weights_fingerprint(model_path: Path) -> str:
    """SHA-256 over the model's weight files (name + bytes), to tie an index to its model."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"No weight files (*.bin, *.safetensors) in {model_path}")
    for path in files:
        digest.update(path.relative_to(model_path).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Embedder:
    """Encodes text with a sentence-transformers model on the CPU.

    ``__init__`` is light; :meth:`warm_up` loads the model (about a second).
    Encoding is guarded by a lock: torch modules are not re-entrant across
    threads and the service shares one Embedder.
    """

    def __init__(
        self, model_path: Path, batch_size: int = 16, threads: int | None = None, max_tokens: int | None = None
    ) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        # More threads than cores only contend (2 cores here).
        self.threads = threads or max(1, min(2, os.cpu_count() or 1))
        self._model = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.model_path.name

    def set_threads(self) -> None:
        """Intra-op threads for the calling thread (OpenMP settings are per thread)."""
        import torch

        torch.set_num_threads(self.threads)

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self.set_threads()
                model = SentenceTransformer(str(self.model_path), device="cpu")
                if self.max_tokens:
                    model.max_seq_length = min(self.max_tokens, model.max_seq_length or self.max_tokens)
                self._model = model

    @property
    def dimension(self) -> int:
        self.warm_up()
        dim = self._model.get_embedding_dimension()  # type: ignore[union-attr]
        return int(dim)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Return L2-normalised float32 vectors, one row per text."""
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(  # type: ignore[union-attr]
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.asarray(vectors, dtype=np.float32)
