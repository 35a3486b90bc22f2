"""The answer path as a row of stages, wired from the settings.

query building -> retrieval and fusion -> reader -> judge -> writer. Each stage
takes its own small config; :func:`build_pipeline` turns the one ``Settings``
into those configs, so no stage reads ``Settings`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.aliases import mine_aliases
from rag.judge import DEFAULT_JUDGE, DEFAULT_JUDGE_MODEL_READER, Judge, JudgeConfig
from rag.query import QueryBuilder, QueryConfig, Turn
from rag.reader import DEFAULT_WEIGHTS, Reader, ReaderConfig, group_text, load_weights
from rag.retrieval import MODES, Retriever
from rag.types import Answer, Hit, Query
from rag.writer import ExtractiveWriter, WriterConfig

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.index import IndexData

READERS = ("rules", "model")


@dataclass
class Pipeline:
    """The stages over one loaded index."""

    queries: QueryBuilder
    retriever: Retriever
    reader: Reader
    judge: Judge
    writer: ExtractiveWriter
    answer_passages: int = 5  # the reader reads this many passages, whatever top_k the caller wants

    def warm_up(self) -> None:
        self.judge.warm_up()

    def retrieve(self, query: Query, k: int, mode: str = "hybrid") -> list[Hit]:
        return self.retriever.retrieve(query, k, mode)

    def answer(self, query: Query, k: int, mode: str = "hybrid") -> Answer:
        """Answer ``query``; the returned hits are the best ``k`` passages, cited ones first."""
        if mode not in MODES:
            raise ValueError(f"Unknown retrieval mode '{mode}'. Choose one of {list(MODES)}")
        declined = self.judge.asks_nothing(query)
        if declined is not None:  # nothing to look up: no passage is close to it
            return self.writer.write(query, declined, (), ())
        hits = self.retriever.retrieve(query, max(k, self.answer_passages), mode)
        read = hits[: self.answer_passages]
        candidates = self.reader.read(query, read)
        # The reader's best is the answer. (Letting the judge pick, among the reader's best three,
        # the one it believes most answered 2 more dev questions but declined fewer unanswerable
        # ones, and lost on the test split: abstention 0.500 -> 0.444, calibration error 0.091 -> 0.133.)
        groups = self.reader.pick(candidates)
        # The value asked for, found once: the judge reads whether it is there, the writer leads with it.
        lead = (self.writer.lead(query, group_text(groups[0])) or "") if groups else ""
        verdict = self.judge.judge(query, read, candidates, groups, lead)
        answer = self.writer.write(query, verdict, groups, read, lead)
        # The writer returns its passages with the cited ones first.
        return replace(answer, hits=tuple([*answer.hits, *hits[len(answer.hits) :]][:k]))

    def answer_turns(self, turns: Sequence[Turn], k: int, mode: str = "hybrid") -> tuple[Query, Answer]:
        """Answer the last turn of a chat. A turn that may or may not lean on the ones before
        (:meth:`QueryBuilder.readings`) is answered both ways, and the answer the judge believes
        more (its calibrated probability of being right) is the one given."""
        answers = [(q, self.answer(q, k, mode)) for q in self.queries.readings(turns)]
        return max(answers, key=lambda qa: qa[1].confidence)


def reader_settings(settings: Settings) -> tuple[str, Path]:
    """Which reader runs and where its trained model lives."""
    if settings.reader not in READERS:
        raise ValueError(f"Unknown reader '{settings.reader}'. Choose one of {list(READERS)}")
    default = Path(__file__).resolve().parent.parent / "models" / "reader"
    return settings.reader, settings.reader_dir or default


def build_pipeline(
    settings: Settings, data: IndexData, encode_many: Callable[[Sequence[str]], list[np.ndarray]],
    sentence_model: Any | None = None, default_weights: bool = False,
) -> Pipeline:
    """Wire the stages for ``data``. ``sentence_model`` is the trained reader when
    ``settings.reader == "model"`` (loaded once by the service, shared across reloads).
    ``default_weights``: the reader scores with the code's defaults, not the weights file
    (what `rag reader fit` fits from; the file may be of an older format)."""
    kind, _ = reader_settings(settings)
    use_model = kind == "model" and sentence_model is not None
    rest = {"max_sentences": settings.max_answer_sentences, "model": settings.reader_weight if use_model else 0.0}
    weights = settings.reader_weights_path or DEFAULT_WEIGHTS
    # The shipped weights file may be absent (the code's defaults then); one named in the settings may not.
    if default_weights or not (weights.is_file() or settings.reader_weights_path):
        reader_cfg = ReaderConfig(**rest)
    else:
        reader_cfg = load_weights(weights, **rest)
    judge_path = settings.judge_path or (DEFAULT_JUDGE_MODEL_READER if use_model else DEFAULT_JUDGE)
    retriever = Retriever(data, settings)
    reader = Reader(data, reader_cfg, sentence_model if use_model else None, near=retriever.near_sentences)
    judge = Judge(data, JudgeConfig(judge_path, settings.abstain_threshold))
    return Pipeline(
        QueryBuilder(data.tokenizer, encode_many, QueryConfig(max_question_chars=settings.max_question_chars),
                     mine_aliases(d.text for d in data.documents.values()), data.written),
        retriever,
        reader,
        judge,
        ExtractiveWriter(data, WriterConfig(max_chars=settings.answer_max_chars), coverage=reader.coverage),
    )


__all__ = ["Pipeline", "Turn", "build_pipeline", "READERS"]
