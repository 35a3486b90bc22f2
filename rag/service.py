"""RagService: the loaded model and index, and the question-answering operations on them.

Owns: warm-up (model, then index), follow-up resolution for chat history,
micro-batched query encoding shared across request threads, and hot reload of
a rebuilt index (the new state is swapped in with one reference assignment, so
requests in flight finish on the state they started with).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from rag.answer import AnswerComposer
from rag.config import Settings
from rag.embedding import Embedder, weights_fingerprint
from rag.index import IndexData, IndexNotReady, index_version, load_index, release_memory
from rag.normalize import NormalizedQuestion, normalize_question, retrieval_text
from rag.retrieval import MODES, Query, Retriever
from rag.types import Answer, Hit

log = logging.getLogger("rag.service")
ROLES = ("user", "assistant")
_MARKER = re.compile(r"\[\d+\]")
# Pronouns, demonstratives and elliptical endings that make a turn lean on the
# previous one. Generic Chinese grammar, not tied to any question.
_FOLLOW_UP = re.compile(
    r"它|他们|她们|他的|她的|其中|该[地区市县镇园企公平项]|这个|那个|这里|那里|这些|那些|这家|那家|此[处地外]|上述|前者|后者"
    r"|^(那|那么|还有|另外|此外|同时|以及|并且)|呢[？?。\s]*$"
)
_CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


def is_follow_up(question: str) -> bool:
    """Does this turn need the previous turns to be understood?"""
    return bool(_FOLLOW_UP.search(question)) or len(_CJK.findall(question)) <= 6


@dataclass(frozen=True)
class _State:
    data: IndexData
    retriever: Retriever
    composer: AnswerComposer
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
        self.error: str | None = None
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
            except IndexNotReady as exc:
                # The previous state (if any) keeps serving.
                self.error = str(exc)
                self._failed_version = version
                return False
            previous = self._state.version if self._state is not None else None
            self._state = _State(data, Retriever(data, self.settings), AnswerComposer(data, self.settings), version)
            self.loads += 1
            self.error = None
            self._failed_version = None
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
        return self._state is not None

    def require(self) -> _State:
        state = self._state
        if state is None:
            raise IndexNotReady(self.error or "The index is not loaded. Run `make index`.")
        return state

    @property
    def data(self) -> IndexData:
        return self.require().data

    # --- queries ----------------------------------------------------------

    # Earlier turns steer retrieval, but the sentence that answers must match
    # the current question: context words count this much in sentence scoring.
    CONTEXT_TERM_WEIGHT = 0.2
    ANSWER_PASSAGES = 5

    def _query(self, state: _State, text: str, context: Sequence[tuple[str, float]] = ()) -> Query:
        tok = state.data.tokenizer
        tokens: list[str] = []
        weights: list[float] = []
        terms: dict[str, tuple[str, tuple[str, ...], float]] = {}
        for n, (piece, weight) in enumerate([(text, 1.0), *context]):
            for t in tok.tokenize(piece):
                tokens.append(t)
                weights.append(weight)
            for word, subs in tok.terms(piece):
                if word not in terms:
                    terms[word] = (word, subs, 1.0 if n == 0 else self.CONTEXT_TERM_WEIGHT * weight)
        if context:
            # Follow-ups retrieve with the earlier question they lean on; sentences
            # are scored against the current question alone.
            combined, focus = self.encoder.encode_many([f"{context[0][0]} {text}", text])
        else:
            combined = focus = self.encoder.encode(text)
        return Query(text, tuple(tokens), tuple(weights), combined, tuple(terms.values()), focus)

    def _top_k(self, top_k: int | None) -> int:
        k = top_k or self.settings.default_top_k
        if not 1 <= k <= self.settings.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.settings.max_top_k}, got {k}")
        return k

    def search(self, query: str, top_k: int | None = None, mode: str = "hybrid") -> list[Hit]:
        state = self.require()
        text = normalize_question(query, self.settings.max_question_chars).text
        return state.retriever.retrieve(self._query(state, text), self._top_k(top_k), mode)

    def ask(
        self,
        question: str | NormalizedQuestion,
        top_k: int | None = None,
        mode: str = "hybrid",
        context: Sequence[tuple[str, float]] = (),
    ) -> Answer:
        """Answer one question. ``context`` is earlier text with token weights (follow-ups).

        Raises:
            QuestionRejected: the question is empty once normalised, or too long.
        """
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode '{mode}'. Choose one of {list(MODES)}")
        # Retrieval and matching use the normalised text; the answer shows what was typed.
        typed = question if isinstance(question, NormalizedQuestion) else normalize_question(
            question, self.settings.max_question_chars)
        question = typed.text
        state = self.require()
        k = self._top_k(top_k)
        query = self._query(state, question, context)
        hits = state.retriever.retrieve(query, max(k, self.ANSWER_PASSAGES), mode)
        # The answer comes from the best few passages whatever top_k the caller wants back.
        answer = state.composer.compose(question, query, hits[: self.ANSWER_PASSAGES])
        # The composer returns its passages with the cited ones first.
        hits = [*answer.hits, *hits[len(answer.hits) :]]
        if self.generator is not None:
            # The LLM sees the earlier turn a follow-up leans on.
            asked = f"（上文：{context[0][0]}）{question}" if context else question
            answer = self.generator.generate(asked, hits[:k], answer)
        answer = replace(answer, question=typed.display, hits=tuple(hits[:k]))
        return answer

    def chat(self, turns: Sequence[Turn], top_k: int | None = None, mode: str = "hybrid") -> Answer:
        """Answer the last user turn, resolving a follow-up from the earlier turns.

        Raises:
            ValueError: no turns, an unknown role, or the last turn is not the user's.
        """
        if not turns:
            raise ValueError("messages must hold at least one turn")
        for t in turns:
            if t.role not in ROLES:
                raise ValueError(f"Unknown role '{t.role}'. Choose one of {list(ROLES)}")
        if turns[-1].role != "user":
            raise ValueError("the last message must be a user turn")
        question = normalize_question(turns[-1].content, self.settings.max_question_chars)
        context = self.follow_up_context([*(Turn(t.role, retrieval_text(t.content)) for t in turns[:-1]),
                                          Turn("user", question.text)])
        return self.ask(question, top_k, mode, context)

    @staticmethod
    def follow_up_context(turns: Sequence[Turn]) -> list[tuple[str, float]]:
        """Earlier text a follow-up leans on: the previous question and the answer to it."""
        question = turns[-1].content.strip()
        if not is_follow_up(question):
            return []
        users = [i for i, t in enumerate(turns[:-1]) if t.role == "user"]
        if not users:
            return []
        last = users[-1]
        context = [(turns[last].content.strip(), 0.6)]
        # A first question that was itself a follow-up brings its own subject along.
        if is_follow_up(turns[last].content) and len(users) >= 2:
            context[0] = (turns[users[-2]].content.strip() + " " + context[0][0], 0.6)
        answer = next((t.content for t in turns[last + 1 : -1] if t.role == "assistant"), "")
        if answer:
            context.append((_MARKER.sub("", answer)[:120], 0.3))
        return context


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
        "citations": [asdict(c) for c in answer.citations],
        "hits": [hit_to_dict(h) for h in answer.hits],
        "note": answer.note,
    }
