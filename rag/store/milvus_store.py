"""The Milvus store: passages and sentences in Milvus collections, BM25 inside the engine.

The same client code talks to Milvus Lite (``RAG_MILVUS_URI`` is a file path,
e.g. ``./milvus.db``: an embedded server the client starts) and to a Milvus
standalone or cluster (``http(s)://host:port``, ``RAG_MILVUS_TOKEN`` for auth).

Each build writes two new collections, ``<prefix>_<stamp>_<pid>_p`` (passages:
vector, analysed text, BM25 sparse vector) and ``..._s`` (sentences: vector),
and records their names in its manifest. The local ``current`` link swap stays
the one commit point, so a build that dies leaves the previous collections
serving; collections no build refers to are dropped by the next build. Milvus
(Lite too) has aliases, and ``<prefix>_passages`` / ``_sentences`` are moved to
each new build for tools outside the service; the service does not read through
them, because its texts (in the build folder) and its vectors must switch at the
same instant, and only the link swap does both at once.

Incremental: only new or changed text is embedded (the embedding cache), but
every row is inserted into the new collections; rows of deleted documents are
gone with the old collections.

Keyword search runs in the engine: the passage text goes through an analyzer
and a BM25 function into a sparse field. ``RAG_MILVUS_ANALYZER`` picks Milvus's
own jieba analyzer or our tokens (jieba with the corpus-mined user dictionary)
stored space-separated behind a whitespace analyzer. Word weights for the
reader (IDF) come from the build's ``idf.npz``, written beside the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.store.base import StoreUnavailable

ANALYZERS = ("ours", "jieba")
PASSAGES, SENTENCES = "_p", "_s"
INSERT_BATCH = 2000
MAX_TEXT_BYTES = 65535  # Milvus's VARCHAR limit


def is_lite(uri: str) -> bool:
    """A file path means Milvus Lite; a URL means a server."""
    return not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))


def _fix_hint(uri: str) -> str:
    if is_lite(uri):
        return (f"Check that RAG_MILVUS_URI ({uri}) is a writable file path and that milvus-lite is installed "
                "(`make install`); Milvus Lite allows one process per file, so stop other processes using it.")
    return (f"Check that Milvus is running and reachable at RAG_MILVUS_URI={uri} (see deploy/README.md) "
            "and that RAG_MILVUS_TOKEN is right, or set RAG_STORE=faiss.")


# pymilvus pings every 10 s even on an idle channel; a server that keeps gRPC's default policy
# (Milvus Lite's does: at most one ping per 5 minutes without calls) answers that with GOAWAY
# "too many pings", which fails the call then in flight on that channel. Pinging only while
# calls run keeps a service that sits idle between questions connected.
GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": False}


def connect(uri: str, token: str | None, timeout: float) -> Any:
    """A MilvusClient, or StoreUnavailable naming what to fix."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - pymilvus is a dependency
        raise StoreUnavailable("pymilvus is not installed. Run `make install`.") from exc
    if is_lite(uri):
        if not uri.endswith(".db"):
            raise StoreUnavailable(f"RAG_MILVUS_URI={uri} is neither a Milvus Lite file path ending in .db "
                                   "(e.g. ./milvus.db) nor a server URL (http://host:19530).")
        Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri=uri, token=token or "", timeout=timeout, grpc_options=GRPC_OPTIONS)
    except Exception as exc:  # any client failure here means: cannot use this Milvus
        raise StoreUnavailable(f"Cannot connect to Milvus at {uri} ({type(exc).__name__}: {_short(exc)}). "
                               f"{_fix_hint(uri)}") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 200 else text[:200] + "…"


class IdfTable:
    """IDF of the corpus's words (from the build), for the reader's coverage score."""

    def __init__(self, vocab: dict[str, int], idf: np.ndarray, max_idf: float) -> None:
        self.vocab = vocab
        self.idf = idf
        self.max_idf = max_idf

    def token_idf(self, token: str) -> float:
        col = self.vocab.get(token)
        return self.max_idf if col is None else float(self.idf[col])

    def save(self, folder: Path) -> None:
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)
        np.savez(folder / "idf.npz", tokens=np.asarray(tokens), idf=self.idf, max_idf=np.float32(self.max_idf))

    @classmethod
    def load(cls, folder: Path) -> IdfTable:
        with np.load(folder / "idf.npz") as data:
            tokens = data["tokens"].tolist()
            return cls({t: i for i, t in enumerate(tokens)}, data["idf"], float(data["max_idf"]))


class MilvusKeyword:
    """BM25 inside Milvus over the passage collection's sparse field."""

    def __init__(self, store: MilvusStore, idf: IdfTable) -> None:
        self.store = store
        self.idf = idf
        self.vocab = idf.vocab

    def token_idf(self, token: str) -> float:
        return self.idf.token_idf(token)

    def search(self, tokens: Sequence[str], k: int, weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
        """BM25 in the engine. A query's words can carry weights (a follow-up's words from earlier
        turns count less): the engine takes plain text, so each weight's words are one search and
        the scores are summed with their weights, as :class:`rag.keyword.KeywordIndex` does."""
        # Words the corpus never saw cannot match: leaving them out keeps the queries short.
        best: dict[str, float] = {}
        for i, token in enumerate(tokens):
            if token.strip() and token in self.vocab:
                w = 1.0 if weights is None else float(weights[i])
                best[token] = max(best.get(token, 0.0), w)
        groups: dict[float, list[str]] = {}
        for token, w in best.items():
            if w > 0:
                groups.setdefault(w, []).append(token)
        scores: dict[int, float] = {}
        join = " ".join if self.store.analyzer == "ours" else "".join
        for w, words in groups.items():
            # Fetch deeper than k when there are several groups: a passage can rank low in each.
            depth = k if len(groups) == 1 else 2 * k
            for i, score in self.store._search(self.store.passages, join(words), "sparse", depth, "BM25"):
                scores[i] = scores.get(i, 0.0) + w * score
        return sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:k]


class MilvusStore:
    """One build's passage and sentence collections in Milvus."""

    kind = "milvus"

    def __init__(self, client: Any, uri: str, passages: str, sentences: str, analyzer: str, idf: IdfTable) -> None:
        self.client = client
        self.uri = uri
        self.passages = passages
        self.sentences = sentences
        self.analyzer = analyzer
        self.keyword = MilvusKeyword(self, idf)

    # --- build ------------------------------------------------------------

    @staticmethod
    def write(client: Any, prefix: str, stamp: str, chunk_vecs: np.ndarray, sent_vecs: np.ndarray,
              keyword_texts: Sequence[str], analyzer: str, index_type: str, lite: bool,
              progress: bool = True) -> dict[str, Any]:
        """Create this build's two collections and fill them; returns what the manifest records.

        Raises:
            ValueError: unknown analyzer.
            StoreUnavailable: Milvus failed.
        """
        if analyzer not in ANALYZERS:
            raise ValueError(f"Unknown Milvus analyzer '{analyzer}'. Choose one of {list(ANALYZERS)}")
        from pymilvus import DataType, Function, FunctionType
        from tqdm import tqdm

        name = f"{prefix}_{stamp}_{os.getpid()}"
        dim = int(chunk_vecs.shape[1])
        # Our tokens arrive space-separated. A Milvus server splits them with its whitespace
        # tokenizer; Milvus Lite (file or `milvus-lite server`) has none, and its standard one
        # (runs of word characters) splits them the same way, so it is the fallback.
        tokenizers = ["jieba"] if analyzer == "jieba" else (["standard"] if lite else ["whitespace", "standard"])

        def passage_collection(tokenizer: str) -> None:
            p_schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            p_schema.add_field("id", DataType.INT64, is_primary=True)
            p_schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            p_schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True,
                               analyzer_params={"tokenizer": tokenizer})
            p_schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            p_schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                           input_field_names=["text"], output_field_names=["sparse"]))
            p_index = client.prepare_index_params()
            p_index.add_index(field_name="vector", index_type=index_type, metric_type="IP")
            p_index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            client.create_collection(name + PASSAGES, schema=p_schema, index_params=p_index)

        try:
            for n, tokenizer in enumerate(tokenizers):
                try:
                    passage_collection(tokenizer)
                    break
                except Exception as exc:
                    if n + 1 == len(tokenizers) or "tokenizer" not in str(exc):
                        raise

            s_schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            s_schema.add_field("id", DataType.INT64, is_primary=True)
            s_schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            s_index = client.prepare_index_params()
            s_index.add_index(field_name="vector", index_type=index_type, metric_type="IP")
            client.create_collection(name + SENTENCES, schema=s_schema, index_params=s_index)

            total = len(chunk_vecs) + len(sent_vecs)
            with tqdm(total=total, desc="Inserting", unit="vec", disable=not progress) as bar:
                for lo in range(0, len(chunk_vecs), INSERT_BATCH):
                    hi = min(lo + INSERT_BATCH, len(chunk_vecs))
                    client.insert(name + PASSAGES, [
                        {"id": i, "vector": chunk_vecs[i].tolist(), "text": _fit(keyword_texts[i])}
                        for i in range(lo, hi)
                    ])
                    bar.update(hi - lo)
                for lo in range(0, len(sent_vecs), INSERT_BATCH):
                    hi = min(lo + INSERT_BATCH, len(sent_vecs))
                    client.insert(name + SENTENCES, [{"id": i, "vector": sent_vecs[i].tolist()} for i in range(lo, hi)])
                    bar.update(hi - lo)
            for coll in (name + PASSAGES, name + SENTENCES):
                client.flush(coll)
                client.load_collection(coll)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"Milvus failed while building {name}: {type(exc).__name__}: {_short(exc)}") from exc
        return {"kind": "milvus", "passages": name + PASSAGES, "sentences": name + SENTENCES,
                "analyzer": analyzer, "tokenizer": tokenizer, "index_type": index_type}

    @staticmethod
    def point_aliases(client: Any, prefix: str, info: dict[str, Any]) -> None:
        """Point ``<prefix>_passages`` / ``<prefix>_sentences`` at the live build, for tools outside
        the service (the service itself follows the manifest, swapped with the index link, so texts
        and vectors switch together)."""
        try:
            for kind in ("passages", "sentences"):
                alias, coll = f"{prefix}_{kind}", str(info[kind])
                if alias in client.list_aliases(collection_name=coll).get("aliases", []):
                    continue
                try:
                    client.alter_alias(collection_name=coll, alias=alias)
                except Exception:  # the alias does not exist yet
                    client.create_alias(collection_name=coll, alias=alias)
        except Exception as exc:
            raise StoreUnavailable(f"Milvus failed to move the aliases of {prefix}: {type(exc).__name__}: "
                                   f"{_short(exc)}") from exc

    @staticmethod
    def prune(client: Any, prefix: str, keep: set[str], alive: Callable[[int], bool]) -> list[str]:
        """Drop this prefix's collections that no kept build names, unless a live build is writing them."""
        dropped = []
        for coll in client.list_collections():
            if not coll.startswith(prefix + "_") or coll in keep:
                continue
            pid = coll.rsplit("_", 2)[-2] if coll.count("_") >= 2 else ""
            if pid.isdigit() and int(pid) != os.getpid() and alive(int(pid)):
                continue  # another rebuild in progress on this machine
            client.drop_collection(coll)
            dropped.append(coll)
        return dropped

    # --- load -------------------------------------------------------------

    @classmethod
    def open(cls, client: Any, uri: str, info: dict[str, Any], folder: Path) -> MilvusStore:
        """The build's collections, loaded for search.

        Raises:
            StoreUnavailable: Milvus cannot be reached.
            KeyError / OSError: the manifest or ``idf.npz`` is damaged (the caller names it).
        """
        store = cls(client, uri, str(info["passages"]), str(info["sentences"]), str(info["analyzer"]),
                    IdfTable.load(folder))
        try:
            existing = set(client.list_collections())
            missing = [c for c in (store.passages, store.sentences) if c not in existing]
            for coll in (store.passages, store.sentences):
                if coll not in missing:
                    client.load_collection(coll)
        except Exception as exc:
            raise StoreUnavailable(f"Milvus at {uri} did not answer ({type(exc).__name__}: {_short(exc)}). "
                                   f"{_fix_hint(uri)}") from exc
        if missing:
            from rag.store.base import REBUILD_HINT, IndexNotReady

            raise IndexNotReady(f"Milvus at {uri} has no collection {', '.join(missing)} that the index at {folder} "
                                f"names (built against another Milvus, or dropped). {REBUILD_HINT}")
        return store

    def counts(self) -> tuple[int, int]:
        """Rows in the passage and sentence collections."""
        return (self._call(lambda: self.client.get_collection_stats(self.passages))["row_count"],
                self._call(lambda: self.client.get_collection_stats(self.sentences))["row_count"])

    # --- queries ----------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            try:
                return fn()
            except Exception as exc:
                # A restarted Milvus keeps the collections but not their loaded state: load, retry once.
                if "load" not in str(exc):
                    raise
                self._ensure_loaded()
                return fn()
        except Exception as exc:  # the client's errors differ by transport; all mean "no answer"
            raise StoreUnavailable(f"Milvus at {self.uri} did not answer ({type(exc).__name__}: {_short(exc)}). "
                                   f"{_fix_hint(self.uri)}") from exc

    def _ensure_loaded(self) -> None:
        for coll in (self.passages, self.sentences):
            state = str(self.client.get_load_state(coll).get("state", ""))
            if not state.endswith("Loaded"):
                self.client.load_collection(coll)

    def _search(self, coll: str, data: Any, field: str, k: int, metric: str) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        res = self._call(lambda: self.client.search(coll, data=[data], anns_field=field, limit=k,
                                                    search_params={"metric_type": metric}, output_fields=[]))
        # Milvus Lite reports BM25 as a negated distance, a server as the score: both mean abs().
        fix = abs if metric == "BM25" else float
        return [(int(hit["id"]), fix(float(hit["distance"]))) for hit in res[0]]

    def passage_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self._search(self.passages, np.asarray(vector, dtype=np.float32).tolist(), "vector", k, "IP")

    def sentence_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self._search(self.sentences, np.asarray(vector, dtype=np.float32).tolist(), "vector", k, "IP")

    def _vectors(self, coll: str, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            return np.zeros((0, 0), dtype=np.float32)
        rows = self._call(lambda: self.client.get(coll, ids=[int(i) for i in ids], output_fields=["vector"]))
        by_id = {int(r["id"]): r["vector"] for r in rows}
        missing = [i for i in ids if int(i) not in by_id]
        if missing:
            raise StoreUnavailable(f"Milvus collection {coll} lacks ids {missing[:5]}: the index is damaged. "
                                   "Run `make index`.")
        return np.asarray([by_id[int(i)] for i in ids], dtype=np.float32)

    def passage_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self._vectors(self.passages, ids)

    def sentence_vectors(self, ids: Sequence[int]) -> np.ndarray:
        return self._vectors(self.sentences, ids)

    def _scores(self, coll: str, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        # From the vectors, fetched by id: on Milvus Lite this measured ~5x faster than a search
        # filtered to the ids (``id in [...]``), whose filter Lite evaluates row by row.
        return self._vectors(coll, ids) @ np.asarray(vector, dtype=np.float32) if len(ids) else np.zeros(0, np.float32)

    def passage_scores(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        return self._scores(self.passages, vector, ids)

    def sentence_scores(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        return self._scores(self.sentences, vector, ids)

    def check(self) -> None:
        self._call(self._ensure_loaded)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection is not an error worth raising
            pass


def _fit(text: str) -> str:
    data = text.encode()
    return text if len(data) <= MAX_TEXT_BYTES else data[:MAX_TEXT_BYTES].decode(errors="ignore")
