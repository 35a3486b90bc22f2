"""Build, save, load and validate the on-disk index; atomic swaps.

Layout under ``settings.index_dir``::

    current -> builds/<stamp>     symlink, swapped atomically by os.replace
    builds/<stamp>/               manifest.json, store.json (documents, passages and
                                  sentences as text), userdict.txt, and the store's part:
                                  faiss: dense.faiss, sentences.faiss, keyword.npz(+vocab)
                                  milvus: idf.npz; the vectors live in the two Milvus
                                  collections the manifest names (rag.store.milvus_store)
    cache/<model>.npz             embeddings keyed by content hash (incremental rebuilds)

A rebuild writes a new ``builds/tmp-*`` folder (and, for Milvus, new
collections), renames it, then swaps the ``current`` link; a rebuild that dies
(even by kill -9) leaves the previous index intact and serving. Loading checks
the manifest against the files, the store and the configured model.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.chunking import make_chunks, split_sentences
from rag.config import Settings
from rag.corpus import CorpusError, CorpusLoadError
from rag.embedding import Embedder, weights_fingerprint
from rag.ingest.store import clean_source, load_sources
from rag.keyword import KeywordIndex
from rag.store import faiss_store, milvus_store
from rag.store.base import REBUILD_HINT, IndexNotReady, SentenceVectors, Store, StoreUnavailable
from rag.text import Tokenizer, match_key, mine_user_words
from rag.types import Chunk, CleanDocument, Heading, Segment, Sentence

__all__ = ["BuildReport", "IndexData", "IndexNotReady", "StoreUnavailable", "index_version", "load_index",
           "rebuild"]

FORMAT_VERSION = 2  # 2: the store seam (sentences.faiss instead of sentences.npy; Milvus)
_COMMON_FILES = ("manifest.json", "store.json", "userdict.txt")
_STORE_FILES = {"faiss": faiss_store.FILES, "milvus": ("idf.npz",)}


def _files(kind: str) -> tuple[str, ...]:
    return _COMMON_FILES + _STORE_FILES.get(kind, ())


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What a rebuild did."""

    path: Path
    seconds: float
    documents: int
    chunks: int
    sentences: int
    embedded: int  # texts that were not in the embedding cache
    up_to_date: bool
    errors: tuple[CorpusError, ...]


@dataclass(frozen=True)
class IndexData:
    """Everything the retriever and composer need, loaded once and shared read-only."""

    path: Path
    manifest: dict[str, Any]
    documents: dict[str, CleanDocument]
    chunks: tuple[Chunk, ...]
    sentences: tuple[Sentence, ...]
    store: Store  # passage and sentence vectors, keyword search
    sentence_vectors: SentenceVectors  # ``[ids]`` fetches from the store
    keyword: Any  # the store's keyword search (``search``, ``token_idf``)
    tokenizer: Tokenizer

    @cached_property
    def articles_key(self) -> str:
        """Every document's text as one match key, built on first use."""
        return "\n".join(match_key(d.text) for d in self.documents.values())

    def written(self, key: str) -> bool:
        """Do the articles write ``key`` (a match key) anywhere?"""
        return key in self.articles_key


# --- build ------------------------------------------------------------------


def _embed_input(title: str, text: str) -> str:
    # The article title gives a passage the context its sentences often leave out.
    return text if text.startswith(title) else f"{title}\n{text}"


def _chunk_settings(settings: Settings) -> dict[str, Any]:
    return {
        "target_chars": settings.chunk_target_chars,
        "max_chars": settings.chunk_max_chars,
        "overlap_sentences": settings.chunk_overlap_sentences,
        "embed_max_tokens": settings.embed_max_tokens,
        **_store_settings(settings),
    }


def _store_settings(settings: Settings) -> dict[str, Any]:
    """What, besides the inputs, decides the store's content (a change rebuilds)."""
    if settings.store == "faiss":
        return {"store": "faiss", "faiss_index_type": settings.faiss_index_type}
    return {"store": "milvus", "milvus_uri": settings.resolved_milvus_uri, "milvus_prefix": settings.milvus_prefix,
            "milvus_analyzer": settings.milvus_analyzer, "milvus_index_type": settings.milvus_index_type}


def _milvus_client(settings: Settings) -> Any:
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    return milvus_store.connect(settings.resolved_milvus_uri, token, settings.milvus_timeout)


def _store_intact(settings: Settings, manifest: dict[str, Any]) -> bool:
    """For Milvus, the collections the manifest names still exist (a new milvus.db has none)."""
    if settings.store != "milvus":
        return True
    info = manifest.get("store", {})
    try:
        names = set(_milvus_client(settings).list_collections())
    except Exception:  # unreachable: the rebuild below reports it properly
        return False
    return info.get("passages") in names and info.get("sentences") in names


def _code_fingerprint() -> str:
    """Hash of the modules that shape the index, so changed cleaning or chunking rebuilds it."""
    from rag import chunking, corpus, keyword, text

    digest = hashlib.sha256()
    for module in (corpus, chunking, text, keyword):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _input_fingerprint(files: dict[str, str], model_fp: str, settings: Settings) -> str:
    payload = json.dumps(
        {
            "format": FORMAT_VERSION, "files": files, "model": model_fp,
            "chunking": _chunk_settings(settings), "code": _code_fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class EmbeddingCache:
    """Vectors keyed by sha1(text), one file per model fingerprint."""

    def __init__(self, folder: Path, model_fp: str, max_tokens: int) -> None:
        self.path = folder / f"{model_fp[:16]}-{max_tokens}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            try:
                with np.load(self.path) as data:
                    self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
            except (OSError, ValueError, KeyError):
                self.vectors = {}  # a damaged cache only costs time

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def save(self, keep: set[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(k for k in self.vectors if k in keep)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}.npz")
        vectors = np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)
        np.savez(tmp, keys=np.asarray(keys), vectors=vectors)
        os.replace(tmp, self.path)


def _embed_all(
    texts: list[str],
    cache: EmbeddingCache,
    embedder_factory: Callable[[], Embedder],
    progress: bool,
    batch: int = 32,
) -> tuple[np.ndarray, int]:
    from tqdm import tqdm

    keys = [cache.key(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache.vectors}.items())
    if missing:
        embedder = embedder_factory()
        bar = tqdm(total=len(missing), desc="Embedding", unit="text", disable=not progress)
        # Sorting by length keeps padding small inside each batch.
        missing.sort(key=lambda kv: len(kv[1]))
        for i in range(0, len(missing), batch):
            part = missing[i : i + batch]
            vecs = embedder.encode([t for _, t in part])
            for (k, _), v in zip(part, vecs, strict=True):
                cache.vectors[k] = v
            bar.update(len(part))
        bar.close()
    return np.stack([cache.vectors[k] for k in keys]).astype(np.float32), len(missing)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rebuild(
    settings: Settings,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> BuildReport:
    """Build the index from the corpus and swap it in atomically.

    Unchanged inputs (same files, model and chunk settings) return at once
    unless ``force``; otherwise unchanged texts reuse cached embeddings.

    Raises:
        rag.corpus.CorpusLoadError: no usable corpus folder.
        rag.config.ConfigError: the model folder is missing.
    """
    t0 = time.perf_counter()
    model_path = settings.resolved_model_path()
    docs, errors = load_sources(settings.corpus_dir)  # text files + uploaded documents
    for err in errors:
        log(f"warning: {err.message}")
    if not docs:
        raise CorpusLoadError(f"No readable corpus files in {settings.corpus_dir}.")
    model_fp = weights_fingerprint(model_path)
    files = {d.path: d.sha256 for d in docs}
    fingerprint = _input_fingerprint(files, model_fp, settings)

    current = settings.current_index
    if not force and current.exists():
        try:
            manifest = json.loads((current / "manifest.json").read_text())
            if manifest.get("input_fingerprint") == fingerprint and all(
                (current / f).exists() for f in _files(settings.store)
            ) and _store_intact(settings, manifest):
                log(f"Index is up to date ({manifest['counts']['chunks']} chunks); nothing to do.")
                return BuildReport(
                    current.resolve(), time.perf_counter() - t0, len(docs),
                    manifest["counts"]["chunks"], manifest["counts"]["sentences"], 0, True, tuple(errors),
                )
        except (OSError, ValueError, KeyError):
            pass  # unreadable manifest: rebuild

    cleaned = [clean_source(d) for d in docs]
    sentences: list[Sentence] = []
    chunks: list[Chunk] = []
    for doc in cleaned:
        sents = split_sentences(doc, first_id=len(sentences))
        chunks += make_chunks(
            doc, sents, settings.chunk_target_chars, settings.chunk_max_chars,
            settings.chunk_overlap_sentences, first_id=len(chunks),
        )
        sentences += sents
    log(f"{len(cleaned)} documents -> {len(chunks)} chunks, {len(sentences)} sentences")

    user_words = mine_user_words([d.text for d in cleaned])
    tokenizer = Tokenizer(user_words)
    chunk_inputs = [_embed_input(c.title, c.text) for c in chunks]
    chunk_tokens = [tokenizer.tokenize(t) for t in chunk_inputs]
    keyword = KeywordIndex.build(chunk_tokens)

    cache = EmbeddingCache(settings.index_dir / "cache", model_fp, settings.embed_max_tokens)
    embedder: list[Embedder] = []

    def factory() -> Embedder:
        if not embedder:
            emb = Embedder.from_settings(settings, max_tokens=settings.embed_max_tokens)
            emb.warm_up()
            embedder.append(emb)
        return embedder[0]

    texts = chunk_inputs + [s.text for s in sentences]
    vectors, embedded = _embed_all(texts, cache, factory, progress)
    chunk_vecs, sent_vecs = vectors[: len(chunks)], vectors[len(chunks) :]
    cache.save({cache.key(t) for t in texts})

    builds = settings.index_dir / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    tmp = builds / f"tmp-{stamp}-{os.getpid()}"
    tmp.mkdir()
    milvus = None
    if settings.store == "faiss":
        store_info = faiss_store.FaissStore.write(tmp, chunk_vecs, sent_vecs, keyword, settings.faiss_index_type)
    else:
        milvus = _milvus_client(settings)
        # Our tokens go in space-separated for the whitespace analyzer; jieba reads the text itself.
        keyword_texts = ([" ".join(tokens) for tokens in chunk_tokens]
                         if settings.milvus_analyzer == "ours" else chunk_inputs)
        store_info = milvus_store.MilvusStore.write(
            milvus, settings.milvus_prefix, stamp, chunk_vecs, sent_vecs, keyword_texts,
            settings.milvus_analyzer, settings.milvus_index_type,
            lite=milvus_store.is_lite(settings.resolved_milvus_uri), progress=progress,
        )
        milvus_store.IdfTable(keyword.vocab, keyword.idf, keyword.max_idf).save(tmp)
    (tmp / "userdict.txt").write_text("\n".join(user_words) + "\n", encoding="utf-8")
    store = {
        "documents": [
            {
                "doc_id": d.doc_id, "path": d.path, "sha256": d.sha256, "text": d.text, "title": d.title,
                "segments": [[s.start, s.end, s.line] for s in d.segments],
                "headings": [[h.start, h.end, h.text, h.level] for h in d.headings],
                "pages": list(d.pages),
            }
            for d in cleaned
        ],
        "chunks": [asdict(c) for c in chunks],
        "sentences": [asdict(s) for s in sentences],
    }
    (tmp / "store.json").write_text(json.dumps(store, ensure_ascii=False), encoding="utf-8")
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"name": model_path.name, "path": str(model_path), "weights_sha256": model_fp},
        "dimension": int(chunk_vecs.shape[1]),
        "chunking": _chunk_settings(settings),
        "files": files,
        "input_fingerprint": fingerprint,
        "store": store_info,
        "counts": {"documents": len(cleaned), "chunks": len(chunks), "sentences": len(sentences),
                   "user_words": len(user_words)},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
    _fsync_tree(tmp)
    final = builds / stamp
    os.rename(tmp, final)
    _swap_link(current, Path("builds") / stamp)
    _prune(builds, keep={final.name})
    if milvus is not None:
        milvus_store.MilvusStore.point_aliases(milvus, settings.milvus_prefix, store_info)
        milvus_store.MilvusStore.prune(milvus, settings.milvus_prefix, _collections_in_use(builds), _alive)
    seconds = time.perf_counter() - t0
    log(f"Index built in {seconds:.1f}s ({embedded} texts embedded, the rest from cache): {final}")
    return BuildReport(final, seconds, len(cleaned), len(chunks), len(sentences), embedded, False, tuple(errors))


def _swap_link(link: Path, target: Path) -> None:
    tmp_link = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    tmp_link.symlink_to(target)
    os.replace(tmp_link, link)  # atomic on POSIX: readers see the old or the new index


def _prune(builds: Path, keep: set[str], keep_previous: int = 1) -> None:
    """Remove dead temp folders and all but the newest ``keep_previous`` older builds."""
    done = sorted(p for p in builds.iterdir() if p.is_dir() and not p.name.startswith("tmp-"))
    older = [p for p in done if p.name not in keep]
    for path in older[: max(0, len(older) - keep_previous)]:
        shutil.rmtree(path, ignore_errors=True)
    for path in builds.glob("tmp-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _collections_in_use(builds: Path) -> set[str]:
    """The Milvus collections the remaining build folders name."""
    names: set[str] = set()
    for path in builds.iterdir():
        try:
            info = json.loads((path / "manifest.json").read_text()).get("store", {})
        except (OSError, ValueError):
            continue
        names.update(str(info[k]) for k in ("passages", "sentences") if k in info)
    return names


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- load -------------------------------------------------------------------


def release_memory() -> None:
    """Hand the memory of a replaced index back to the system (call after a swap).

    The old index's objects are freed when the last request on it ends, but freed
    memory stays in the C allocator's arenas; without this a reloading server grows
    with every reload. Collecting cycles first frees what only the collector can.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc only; elsewhere the memory is simply kept
    except (OSError, AttributeError):
        pass


def index_version(settings: Settings) -> str | None:
    """The build the ``current`` link points at (cheap; used to notice swaps)."""
    try:
        return os.readlink(settings.current_index)
    except OSError:
        return None


def load_index(settings: Settings, model_fp: str | None = None) -> IndexData:
    """Load and validate the live index.

    Args:
        settings: where the index lives and which model the service uses.
        model_fp: the configured model's weights fingerprint, if already known.

    Raises:
        IndexNotReady: missing, corrupt, or built with another model or format.
    """
    link = settings.current_index
    if not link.exists():
        raise IndexNotReady(f"No index at {link}. {REBUILD_HINT}")
    path = link.resolve()
    if not (path / "manifest.json").is_file():
        raise IndexNotReady(f"Index at {path} is incomplete (missing manifest.json). {REBUILD_HINT}")
    try:
        built_for = str(json.loads((path / "manifest.json").read_text()).get("store", {}).get("kind", "faiss"))
    except (OSError, ValueError, AttributeError) as exc:
        raise IndexNotReady(f"Index manifest at {path} is unreadable ({exc}). {REBUILD_HINT}") from exc
    missing = [f for f in _files(built_for) if not (path / f).is_file()]
    if missing:
        raise IndexNotReady(f"Index at {path} is incomplete (missing {', '.join(missing)}). {REBUILD_HINT}")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        version = manifest["format_version"]
        expected_model = str(manifest["model"]["weights_sha256"])
        dimension = int(manifest["dimension"])
        # Read (and type-check) here, so a manifest of the wrong shape is "unreadable", not a crash later.
        counts = {name: int(manifest["counts"][name]) for name in ("chunks", "sentences")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexNotReady(f"Index manifest at {path} is unreadable ({exc}). {REBUILD_HINT}") from exc
    if version != FORMAT_VERSION:
        raise IndexNotReady(
            f"Index format {version} does not match this version of the code ({FORMAT_VERSION}). {REBUILD_HINT}"
        )
    if model_fp is None:
        model_fp = weights_fingerprint(settings.resolved_model_path())
    if model_fp != expected_model:
        raise IndexNotReady(
            f"Index was built with another embedding model ({manifest['model'].get('name')}, "
            f"weights {expected_model[:12]}) than the configured one (weights {model_fp[:12]}). {REBUILD_HINT}"
        )
    if built_for != settings.store:
        raise IndexNotReady(
            f"The index at {path} was built for the {built_for} store, but RAG_STORE={settings.store}. "
            f"Set RAG_STORE={built_for}, or rebuild for {settings.store}: {REBUILD_HINT}"
        )
    store: Store
    reading = "the store files"
    try:
        if built_for == "faiss":
            import faiss

            reading = "dense.faiss"
            passages = faiss.read_index(str(path / "dense.faiss"))
            reading = "sentences.faiss"
            sentence_index = faiss.read_index(str(path / "sentences.faiss"))
            reading = "keyword.npz"
            store = faiss_store.FaissStore(passages, sentence_index, KeywordIndex.load(path, "keyword"))
        else:
            reading = "idf.npz"
            store = milvus_store.MilvusStore.open(_milvus_client(settings), settings.resolved_milvus_uri,
                                                  manifest["store"], path)
        reading = "store.json"
        records = json.loads((path / "store.json").read_text(encoding="utf-8"))
        reading = "userdict.txt"
        user_words = (path / "userdict.txt").read_text(encoding="utf-8").split()
        reading = "store.json"  # its records become documents, chunks and sentences below
        documents = {
            d["doc_id"]: CleanDocument(
                d["doc_id"], d["path"], d["sha256"], d["text"],
                tuple(Segment(*s) for s in d["segments"]),
                tuple(Heading(*h) for h in d["headings"]),
                d["title"], tuple(d.get("pages", ())),
            )
            for d in records["documents"]
        }
        chunks = tuple(Chunk(**{**c, "sent_ids": tuple(c["sent_ids"])}) for c in records["chunks"])
        sentences = tuple(Sentence(**s) for s in records["sentences"])
    except IndexNotReady:  # the store is unreachable or lacks this build: its own message says why
        raise
    except Exception as exc:  # any parse failure means the files are damaged
        # Name the file, not the library's message: that one can hold source paths (faiss's do),
        # and this text is shown by /health. The cause stays chained for logs and debugging.
        raise IndexNotReady(
            f"Index at {path} is corrupt ({reading} is unreadable: {type(exc).__name__}). {REBUILD_HINT}"
        ) from exc
    problems = []
    if isinstance(store, faiss_store.FaissStore):
        n_passages, n_sentences, dim = store.counts()
        if dim != dimension:
            problems.append(f"vector dimension differs from the manifest ({dimension})")
        if store.keyword.weights.shape[0] != len(chunks):
            problems.append("chunk counts differ between files")
    else:
        n_passages, n_sentences = store.counts()
    if n_passages != len(chunks) or len(chunks) != counts["chunks"]:
        problems.append("chunk counts differ between files")
    if len(sentences) != counts["sentences"] or n_sentences != len(sentences):
        problems.append("sentence counts differ between files")
    if problems:
        raise IndexNotReady(f"Index at {path} is inconsistent: {'; '.join(dict.fromkeys(problems))}. {REBUILD_HINT}")
    tokenizer = Tokenizer(user_words)
    tokenizer.warm_up()
    return IndexData(
        path, manifest, documents, chunks, sentences, store,
        SentenceVectors(store, len(sentences)), store.keyword, tokenizer,
    )
