"""RagService: the loaded model and index, and the question-answering operations on them.

Owns: warm-up (model, then index), follow-up resolution for chat history,
micro-batched query encoding shared across request threads, and hot reload of
a rebuilt index (the new state is swapped in with one reference assignment, so
requests in flight finish on the state they started with).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from rag.config import Settings
from rag.embedding import Embedder, weights_fingerprint
from rag.index import (
    IndexData,
    IndexNotReady,
    StoreUnavailable,
    index_version,
    load_index,
    release_memory,
)
from rag.ingest.pages import page_of_line
from rag.pipeline import Pipeline, build_pipeline, reader_settings
from rag.query import Turn
from rag.retrieval import MODES
from rag.types import Answer, CleanDocument, Hit

__all__ = ["RagService", "Turn", "answer_to_dict", "hit_to_dict"]
log = logging.getLogger("rag.service")


@dataclass(frozen=True)
class _State:
    data: IndexData
    pipeline: Pipeline
    version: str | None


class QueryEncoder:
    """Encodes questions on one worker thread, batching those that arrive together.

    Concurrent requests then share one forward pass instead of queueing for
    the model one by one.
    """

    def __init__(self, embedder: Embedder, max_batch: int = 16) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[str, Future[np.ndarray]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Forward passes by batch size (index = size); written by the worker only, read by /metrics.
        self._batches = [0] * (max_batch + 1)

    def batch_sizes(self) -> list[int]:
        """How many forward passes encoded 0, 1, 2, ... questions together."""
        return list(self._batches)

    def _run(self) -> None:
        # OpenMP thread counts are per thread: set them where the model runs.
        self.embedder.set_threads()
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._batches[len(batch)] += 1
            try:
                vectors = self.embedder.encode([text for text, _ in batch])
            except Exception as exc:  # hand the failure to every waiting request
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut), vec in zip(batch, vectors, strict=True):
                fut.set_result(vec)

    def encode(self, text: str) -> np.ndarray:
        return self.encode_many([text])[0]

    def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Encode several texts; they ride in the same batch when the worker is free."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="query-encoder", daemon=True)
                    self._thread.start()
        futures: list[Future[np.ndarray]] = []
        for text in texts:
            fut: Future[np.ndarray] = Future()
            self._queue.put((text, fut))
            futures.append(fut)
        return [f.result() for f in futures]


class RagService:
    """Answers questions over the live index. Light ``__init__``; :meth:`warm_up` loads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder = Embedder.from_settings(settings)
        self.encoder = QueryEncoder(self.embedder)
        self._model_fp: str | None = None
        self._state: _State | None = None
        self._reload_lock = threading.Lock()
        self._failed_version: str | None = None  # a build that failed to load; retried when the link moves
        self._store_down = False  # the store (Milvus) did not answer: retried on the next check
        self._next_store_try = 0.0
        self.error: str | None = None
        self.sentence_model: Any = None  # the trained reader (RAG_READER=model), loaded by warm_up
        self.loads = 0  # indexes loaded since start (/metrics)
        # Optional LLM writer (RAG_LLM_BASE_URL); the extractive answer is its fallback.
        self.generator = None
        if settings.llm_base_url:
            from rag.llm import LlmGenerator

            self.generator = LlmGenerator(settings)

    # --- lifecycle --------------------------------------------------------

    def warm_up(self) -> None:
        """Load the model, then the index. An unusable index leaves the service not ready.

        Raises:
            IndexNotReady: only from :meth:`require`, never from here.
        """
        self.embedder.warm_up()
        self._model_fp = weights_fingerprint(self.embedder.model_path)
        kind, reader_dir = reader_settings(self.settings)
        if kind == "model" and self.sentence_model is None:
            from rag.reader_model import CrossEncoderReader

            model = CrossEncoderReader(reader_dir)
            model.warm_up()
            self.sentence_model = model
        self.reload(force=True)
        if self._state is not None:
            self.encoder.encode("预热")  # first forward pass allocates; keep it out of requests

    def reload(self, force: bool = False) -> bool:
        """Load the index if the ``current`` link moved (or ``force``). Returns True if swapped.

        A failed load keeps the previous state serving and records the error.
        """
        with self._reload_lock:
            version = index_version(self.settings)
            if not force and self._state is not None and (
                version == self._state.version or (version is not None and version == self._failed_version)
            ):
                # Unchanged, or a build that already failed to load: do not reload it on every poll.
                if version == self._state.version:
                    self.error = self._failed_version = None  # the link is back on the served build
                return False
            try:
                data = load_index(self.settings, self._model_fp)
            except StoreUnavailable as exc:
                # Not the build's fault: retried by the next check, not marked as a failed build.
                self.error = str(exc)
                self._store_down = True
                return False
            except IndexNotReady as exc:
                # The previous state (if any) keeps serving.
                self.error = str(exc)
                self._failed_version = version
                return False
            previous = self._state.version if self._state is not None else None
            pipeline = build_pipeline(self.settings, data, self.encoder.encode_many, self.sentence_model)
            pipeline.warm_up()
            self._state = _State(data, pipeline, version)
            self.loads += 1
            self.error = None
            self._failed_version = None
            self._store_down = False
            log.info("index loaded from build %s (built %s, %d chunks)%s", version, data.manifest.get("built_at"),
                     len(data.chunks), f"; replaces build {previous}" if previous else "")
            if previous is not None:
                release_memory()
            return True

    @property
    def version(self) -> str | None:
        """The build being served (the ``current`` link's target when it was loaded)."""
        state = self._state
        return state.version if state is not None else None

    @property
    def ready(self) -> bool:
        """Loaded, and its store answers (a check of Milvus; free for the embedded store)."""
        return self.check_store() and self._state is not None

    def check_store(self) -> bool:
        """Whether the store answers now; records why not in ``error`` and clears it on recovery.

        A store that could not be reached at load time is loaded again here (at most
        once a second), so the service recovers by itself when Milvus comes back.
        """
        state = self._state
        if state is None:
            if self._store_down and time.monotonic() >= self._next_store_try:
                self._next_store_try = time.monotonic() + 1.0
                self.reload(force=True)
            return self._state is not None
        try:
            state.data.store.check()
        except StoreUnavailable as exc:
            self.error = str(exc)
            self._store_down = True
            return False
        if self._store_down:
            self._store_down = False
            self.error = None
        return True

    def require(self) -> _State:
        state = self._state
        if state is None and self._store_down:
            self.check_store()
            state = self._state
        if state is None:
            raise IndexNotReady(self.error or "The index is not loaded. Run `make index`.")
        return state

    @property
    def data(self) -> IndexData:
        return self.require().data

    # --- queries ----------------------------------------------------------

    def _top_k(self, top_k: int | None) -> int:
        k = top_k or self.settings.default_top_k
        if not 1 <= k <= self.settings.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.settings.max_top_k}, got {k}")
        return k

    def search(self, query: str, top_k: int | None = None, mode: str = "hybrid") -> list[Hit]:
        """The best passages for ``query`` (normalised like a question).

        Raises:
            QuestionRejected: the query is empty once normalised, or too long.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode '{mode}'. Choose one of {list(MODES)}")
        state = self.require()
        return state.pipeline.retrieve(state.pipeline.queries.from_text(query), self._top_k(top_k), mode)

    def ask(self, question: str, top_k: int | None = None, mode: str = "hybrid") -> Answer:
        """Answer one question on its own."""
        return self.chat([Turn("user", question)], top_k, mode)

    def chat(self, turns: Sequence[Turn], top_k: int | None = None, mode: str = "hybrid") -> Answer:
        """Answer the last user turn; a follow-up is rewritten from the earlier turns first.

        Raises:
            ValueError: no turns, an unknown role, the last turn is not the user's, a bad top_k or mode.
            QuestionRejected: the question is empty once normalised, or too long.
        """
        state, query, answer = self._extractive(turns, top_k, mode)
        if self.generator is not None and not answer.abstained:
            # The judge decided to answer; the LLM writes the answer from the passages.
            answer = self.generator.generate(query.text, list(answer.hits), answer)
        return with_pages(answer, state.data.documents)

    def chat_stream(self, turns: Sequence[Turn], top_k: int | None = None,
                    mode: str = "hybrid") -> Iterator[str | Answer]:
        """Like :meth:`chat`, but the LLM writer's text comes as it is written: the
        iterator yields text pieces, then the final :class:`Answer`. Without an LLM (or
        when the judge abstains) it yields the answer alone.

        Raises (at the call, before anything is yielded): as :meth:`chat`.
        """
        state, query, answer = self._extractive(turns, top_k, mode)
        documents = state.data.documents
        if self.generator is None or answer.abstained:
            return iter([with_pages(answer, documents)])
        pieces = self.generator.stream(query.text, list(answer.hits), answer)
        return (item if isinstance(item, str) else with_pages(item, documents) for item in pieces)

    def _extractive(self, turns: Sequence[Turn], top_k: int | None, mode: str) -> tuple[_State, Any, Answer]:
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode '{mode}'. Choose one of {list(MODES)}")
        state = self.require()
        k = self._top_k(top_k)
        query, answer = state.pipeline.answer_turns(turns, k, mode)
        return state, query, answer


def with_pages(answer: Answer, documents: Mapping[str, CleanDocument]) -> Answer:
    """Give each citation of an uploaded PDF the page its first line is on."""
    cited = []
    for c in answer.citations:
        doc = documents.get(c.doc_id)
        page = page_of_line(doc.pages, c.line_start) if doc is not None else None
        cited.append(replace(c, page=page) if page is not None else c)
    return replace(answer, citations=tuple(cited))


def hit_to_dict(hit: Hit) -> dict[str, Any]:
    c = hit.chunk
    return {
        "chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title, "text": c.text,
        "score": round(hit.score, 4), "start": c.start, "end": c.end,
        "line_start": c.line_start, "line_end": c.line_end,
    }


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    return {
        "answer": answer.text,
        "abstained": answer.abstained,
        "confidence": round(answer.confidence, 4),
        "question": answer.question,
        "rewritten": answer.rewritten,
        "lead": answer.lead,
        "citations": [asdict(c) for c in answer.citations],
        "hits": [hit_to_dict(h) for h in answer.hits],
        "note": answer.note,
    }
