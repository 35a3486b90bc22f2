"""The trained reader at run time: P(this sentence states the answer to the question).

Owns the shipped model folder's contract (``manifest.json`` + ``model.int8.onnx`` +
``tokenizer.json``, checked by hash before use), how a (question, sentence) pair is
turned into model input, and scoring. A cross-encoder reads the question and the
sentence together ([CLS] question [SEP] sentence [SEP]), so unlike the bi-encoder it
can tell "the right company, another fact" from the answer.

Runs on ONNX Runtime and the ``tokenizers`` library only: importing torch or
transformers would cost a server ~1 s and ~250 MB it never uses. Training and
export live in :mod:`rag.reader_train`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embedding import token_arrays

MODEL_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
CONTEXT_MODES = ("sentence", "title")
REBUILD_HINT = "Run `rag reader train` to rebuild it (or restore the folder from git)."
TITLE_CHARS = 16  # a title prefix longer than this only eats the sentence's tokens
PREVIOUS_CHARS = 40
# A sentence that opens by pointing back ("该公司……", "其中……") names its subject in
# the sentence before; generic Chinese grammar, not tied to any question.
_LEANS_BACK = re.compile(r"^(它|它们|其|其中|该|这|此|他|她|他们|她们|上述|同时|此外|另外|对此|为此|目前,|目前，)")


class ReaderUnavailable(RuntimeError):
    """The reader's files are missing, damaged or do not match their manifest."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pair_text(sentence: str, title: str = "", previous: str = "", context: str = "sentence") -> str:
    """The second segment the reader sees for one candidate sentence.

    ``sentence``: the sentence, preceded by the end of the previous one when it
    opens by pointing back. ``title``: the same with the section title in front.
    """
    if context not in CONTEXT_MODES:
        raise ValueError(f"Unknown reader context '{context}'. Choose one of {list(CONTEXT_MODES)}")
    text = sentence
    if previous and _LEANS_BACK.match(sentence):
        text = f"{previous[-PREVIOUS_CHARS:]}{sentence}"
    if context == "title" and title and not sentence.startswith(title):
        text = f"{title[:TITLE_CHARS]}：{text}"
    return text


def encode_pairs(tokenizer: Any, question: str, texts: Sequence[str], max_tokens: int) -> dict[str, np.ndarray]:
    """Token arrays for (question, text) pairs, padded to the longest; shared by training and run time.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` whose post-processor adds [CLS]/[SEP]
    and the segment ids. Long pairs lose tokens from the longer side (the sentence).
    """
    tokenizer.enable_truncation(max_length=max_tokens, strategy="longest_first")
    return token_arrays(tokenizer.encode_batch([(question, t) for t in texts]))


def load_tokenizer(path: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    return tok


class CrossEncoderReader:
    """Scores candidate sentences for a question. Light ``__init__``; :meth:`warm_up` loads."""

    def __init__(self, model_dir: Path, threads: int = 1, max_tokens: int = 96) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.max_tokens = max_tokens
        self.manifest: dict[str, Any] = {}
        self._session: Any = None
        self._tokenizer: Any = None

    @property
    def context(self) -> str:
        """How candidate text is built (:func:`pair_text`), as the shipped model was trained."""
        return str(self.manifest.get("settings", {}).get("context", "sentence"))

    def _check(self) -> None:
        where = self.model_dir
        manifest_path = where / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ReaderUnavailable(f"No reader model at {where} (missing {MANIFEST_FILE}). {REBUILD_HINT}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            expected = dict(manifest["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ReaderUnavailable(f"Unreadable reader manifest {manifest_path} ({exc}). {REBUILD_HINT}") from exc
        for name in (MODEL_FILE, TOKENIZER_FILE):
            path = where / name
            if not path.is_file():
                raise ReaderUnavailable(f"Reader file {path} is missing. {REBUILD_HINT}")
            if file_sha256(path) != expected.get(name):
                raise ReaderUnavailable(f"Reader file {path} does not match its manifest (sha256). {REBUILD_HINT}")
        self.manifest = manifest

    def warm_up(self) -> None:
        """Check the files against the manifest, then load the session and tokenizer.

        Raises:
            ReaderUnavailable: a file is missing, damaged or cannot be loaded; the
                message names the folder and the command that rebuilds it.
        """
        if self._session is not None:
            return
        self._check()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Idle workers that spin steal the cores from the HTTP server.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        path = self.model_dir / MODEL_FILE
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own (pybind) exception types
            raise ReaderUnavailable(f"ONNX Runtime cannot read {path}: {exc}. {REBUILD_HINT}") from exc
        self._tokenizer = load_tokenizer(self.model_dir / TOKENIZER_FILE)
        self._session = session
        self.score("预热", ["预热。"])  # the first run allocates; keep it out of requests

    def pair(self, sentence: str, title: str = "", previous: str = "") -> str:
        """The text the model reads for one candidate, built as it was trained (:func:`pair_text`)."""
        return pair_text(sentence, title, previous, self.context)

    def score(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        """P(sentence states the answer) for each sentence, float32 in [0, 1], in one ONNX call.

        Dynamic int8 quantisation scales activations per call, so a sentence's score
        moves by a few thousandths with the other sentences in the call.
        """
        if not sentences:
            return np.zeros(0, dtype=np.float32)
        if self._session is None:
            self.warm_up()
        feeds = encode_pairs(self._tokenizer, question, sentences, self.max_tokens)
        probs = self._session.run(None, feeds)[0]
        return np.clip(np.asarray(probs, dtype=np.float32).reshape(-1), 0.0, 1.0)
