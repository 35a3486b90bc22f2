"""The Embedder: a local sentence-transformers model, loaded lazily, never at import.

Owns the weights fingerprint written to the manifest, normalised float32
vectors, and the two ways of running the model:

* ``onnx`` (default): the transformer exported once to ONNX (cached beside the
  index, keyed by the weights fingerprint) and run with ONNX Runtime; pooling is
  done here in NumPy. A question encodes about twice as fast as on torch on this
  2-core CPU (7 vs 14 ms), which is most of a request's time; passages about
  1.2-1.5 times as fast.
* ``torch``: sentence-transformers itself. Also the fallback when a model's
  modules cannot be exported (anything beyond Transformer + mean/CLS pooling +
  Normalize) or the exported graph disagrees with torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rag.config import Settings

_WEIGHT_SUFFIXES = (".bin", ".safetensors")
BACKENDS = ("onnx", "torch")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Sentences the exported graph must reproduce before it is trusted.
_PROBES = (
    "钱塘新区哪个产业平台主攻半导体产业？",
    "示例",
    "杭州经济技术开发区位于钱塘江北岸，是1993年经国务院批准设立的国家级开发区。",
    "Hello World: GDP增长5.8%，ＡＢＣ公司 eWTP 平台",  # case and width: the tokenizer file must agree too
)
# Bumped when the export or its tokenization changes, so older exports are made (and checked) again.
_EXPORT_VERSION = 2
_MIN_AGREEMENT = 0.999  # cosine between ONNX and torch vectors

log = logging.getLogger(__name__)


class OnnxUnavailable(RuntimeError):
    """The model cannot run on ONNX Runtime; the torch backend is used instead."""


class DamagedExport(OnnxUnavailable):
    """The exported files exist but cannot be read: they are deleted and made again."""


def weights_fingerprint(model_path: Path) -> str:
    """SHA-256 over the model's weight files (name + bytes), to tie an index to its model.

    Hashing ~100 MB takes a noticeable fraction of a second and a start-up asks
    for it more than once (index check, ONNX export name), so the digest is kept
    for as long as the files' sizes and modification times stay the same.
    """
    files = sorted(p for p in model_path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"No weight files (*.bin, *.safetensors) in {model_path}")
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(model_path, stats)


@lru_cache(maxsize=8)
def _digest(model_path: Path, stats: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        path = Path(name)
        digest.update(path.relative_to(model_path).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def export_onnx(model_path: Path, target: Path) -> None:
    """Export the model's transformer to ``target`` (+ a ``.json`` with pooling and limits).

    Written to temporary names and renamed, so a crash leaves no half file.

    Raises:
        OnnxUnavailable: modules other than Transformer, mean/CLS Pooling and
            Normalize, or the exported graph does not reproduce torch's vectors.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    model = SentenceTransformer(str(model_path), device="cpu")
    modules = list(model)
    if len(modules) < 2 or not isinstance(modules[0], models.Transformer) or not isinstance(modules[1], models.Pooling):
        raise OnnxUnavailable(f"{model_path.name}: modules {[type(m).__name__ for m in modules]} are not Transformer + Pooling")
    if any(not isinstance(m, models.Normalize) for m in modules[2:]):
        raise OnnxUnavailable(f"{model_path.name}: extra modules after pooling cannot be exported")
    pooling = str(getattr(modules[1], "pooling_mode", ""))
    if pooling not in ("mean", "cls"):
        raise OnnxUnavailable(f"{model_path.name}: pooling '{pooling}' is not supported (mean, cls)")
    hf, tokenizer = modules[0].auto_model.eval(), modules[0].tokenizer
    sample = tokenizer(list(_PROBES[:1]), return_tensors="pt")
    names = [n for n in _INPUTS if n in sample]

    class _Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(names, args, strict=True))).last_hidden_state

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.onnx")
    meta_tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.json")
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"hidden": {0: "batch", 1: "tokens"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter is chatty about tracing
            torch.onnx.export(
                _Body().eval(), tuple(sample[n] for n in names), str(tmp), input_names=names,
                output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False,
            )
        meta = {"inputs": names, "pooling": pooling, "max_seq_length": int(model.max_seq_length or 512)}
        runner = _OnnxRunner(tmp, meta, model_path, threads=1)
        ours = runner.encode(list(_PROBES), 512)
        agreement = float((ours * model.encode(list(_PROBES), normalize_embeddings=True)).sum(1).min())
        if agreement < _MIN_AGREEMENT:
            raise OnnxUnavailable(f"{model_path.name}: ONNX and torch vectors differ (cosine {agreement:.4f})")
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, target.with_suffix(".json"))
        os.replace(tmp, target)  # last: the .onnx existing means both files are complete
    finally:
        # Whatever failed, no model-sized temporary is left behind.
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)


def token_arrays(encodings: Sequence[Any]) -> dict[str, np.ndarray]:
    """``tokenizers`` encodings as int64 model inputs, padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    # Padding positions are masked out, so the pad id itself never matters.
    arrays = {n: np.zeros((len(encodings), width), dtype=np.int64) for n in _INPUTS}
    for row, e in enumerate(encodings):
        arrays["input_ids"][row, : len(e.ids)] = e.ids
        arrays["attention_mask"][row, : len(e.ids)] = e.attention_mask
        arrays["token_type_ids"][row, : len(e.ids)] = e.type_ids
    return arrays


class _OnnxRunner:
    """An ONNX Runtime session plus the model's tokenizer and pooling."""

    def __init__(self, onnx_path: Path, meta: dict[str, Any], model_path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle workers that spin steal the cores from the HTTP server (as OMP_WAIT_POLICY for torch).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own (pybind) exception types
            raise DamagedExport(f"ONNX Runtime cannot read {onnx_path}: {exc}") from exc
        # The model's fast tokenizer file runs on the `tokenizers` library alone: importing
        # transformers would load torch (~1 s and ~250 MB) into a server that never uses it.
        self._fast: Any = None
        self._hf: Any = None
        if (model_path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(model_path / "tokenizer.json"))
            self._fast.no_padding()
        else:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(model_path))
        self.inputs: list[str] = list(meta["inputs"])
        self.pooling: str = meta["pooling"]
        self.max_seq_length: int = int(meta["max_seq_length"])

    def _tokenize(self, texts: list[str], limit: int) -> dict[str, np.ndarray]:
        if self._hf is not None:
            batch = self._hf(texts, padding=True, truncation=True, max_length=limit, return_tensors="np")
            return {n: np.asarray(batch[n], dtype=np.int64) for n in self.inputs}
        self._fast.enable_truncation(max_length=limit)
        arrays = token_arrays(self._fast.encode_batch(texts))
        return {n: arrays[n] for n in self.inputs}

    def encode(self, texts: list[str], max_tokens: int) -> np.ndarray:
        feeds = self._tokenize(texts, min(max_tokens, self.max_seq_length))
        hidden = self.session.run(None, feeds)[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return _normalise(pooled)


class Embedder:
    """Encodes text with a local sentence-transformers model on the CPU.

    ``__init__`` is light; :meth:`warm_up` loads the model (about a second; the
    first use of the ``onnx`` backend also exports the model into ``onnx_dir``, a
    few seconds more; without an ``onnx_dir`` the model runs on torch).
    Encoding is guarded by a lock: the tokenizer and torch modules are not
    re-entrant across threads and the service shares one Embedder.
    """

    def __init__(
        self,
        model_path: Path,
        batch_size: int = 16,
        threads: int | None = None,
        max_tokens: int | None = None,
        backend: str = "onnx",
        onnx_dir: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown embedding backend '{backend}'. Choose one of {list(BACKENDS)}")
        self.model_path = model_path
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.requested_backend = backend
        self.onnx_dir = onnx_dir
        # More threads than cores only contend (2 cores here).
        self.threads = threads or max(1, min(2, os.cpu_count() or 1))
        self._model: Any = None
        self._onnx: _OnnxRunner | None = None
        self._dimension: int | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.model_path.name

    @property
    def backend(self) -> str:
        """The backend in use (``onnx`` can fall back to ``torch``); valid after warm-up."""
        return "onnx" if self._onnx is not None else "torch"

    def set_threads(self) -> None:
        """Intra-op threads for the calling thread (torch's OpenMP settings are per thread)."""
        if self._onnx is not None:
            return  # the ONNX session has its own pool, sized at creation
        import torch

        torch.set_num_threads(self.threads)

    @classmethod
    def from_settings(cls, settings: Settings, max_tokens: int | None = None) -> Embedder:
        return cls(
            settings.resolved_model_path(), settings.embed_batch_size, max_tokens=max_tokens,
            backend=settings.embed_backend, onnx_dir=settings.resolved_onnx_dir,
        )

    def onnx_path(self, fingerprint: str) -> Path:
        if self.onnx_dir is None:
            raise OnnxUnavailable("no folder for the ONNX export (onnx_dir) was given")
        return self.onnx_dir / f"{fingerprint[:16]}-v{_EXPORT_VERSION}.onnx"

    def warm_up(self) -> None:
        if self._model is not None or self._onnx is not None:
            return
        with self._lock:
            if self._model is not None or self._onnx is not None:
                return
            if self.requested_backend == "onnx":
                try:
                    self._onnx = self._load_onnx()
                    return
                except OnnxUnavailable as exc:
                    log.warning("ONNX backend unavailable, using torch: %s", exc)
            self._model = self._load_torch()

    def _load_onnx(self) -> _OnnxRunner:
        fingerprint = weights_fingerprint(self.model_path)
        path = self.onnx_path(fingerprint)
        if not path.exists():
            log.info("Exporting %s to ONNX (once per model): %s", self.name, path)
            try:
                export_onnx(self.model_path, path)
            except OnnxUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - a read-only folder, a full disk, an exporter bug
                # Speed is lost, not service: the caller falls back to torch.
                raise OnnxUnavailable(f"export to {path} failed: {exc}") from exc
            # Exports of this model in an older format are superseded (about 100 MB each).
            for old in path.parent.glob(f"{fingerprint[:16]}*"):
                if old.stem != path.stem and ".tmp" not in old.name:
                    old.unlink(missing_ok=True)
        try:
            try:
                meta = json.loads(path.with_suffix(".json").read_text())
                meta = {"inputs": list(meta["inputs"]), "pooling": str(meta["pooling"]),
                        "max_seq_length": int(meta["max_seq_length"])}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DamagedExport(f"unreadable {path.with_suffix('.json')}: {exc}") from exc
            return _OnnxRunner(path, meta, self.model_path, self.threads)
        except DamagedExport:
            # Only a damaged export is dropped (the next start exports again); other
            # failures (no onnxruntime, no memory) leave a good export for later.
            path.unlink(missing_ok=True)
            raise
        except ImportError as exc:
            raise OnnxUnavailable(f"onnxruntime is not installed: {exc}") from exc

    def _load_torch(self) -> Any:
        from sentence_transformers import SentenceTransformer

        self.set_threads()
        model = SentenceTransformer(str(self.model_path), device="cpu")
        if self.max_tokens:
            model.max_seq_length = min(self.max_tokens, model.max_seq_length or self.max_tokens)
        return model

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.encode(["维度"]).shape[1])
        return self._dimension

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return L2-normalised float32 vectors, one row per text."""
        self.warm_up()
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            if self._onnx is not None:
                limit = self.max_tokens or self._onnx.max_seq_length
                parts = [
                    self._onnx.encode(texts[i : i + self.batch_size], limit)
                    for i in range(0, len(texts), self.batch_size)
                ]
                return np.concatenate(parts)
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
