"""The frozen dataclasses that move between pipeline stages.

Offsets (``start``/``end``) always index the *cleaned* text of the document
named by ``doc_id``; ``line_start``/``line_end`` are 1-based raw line numbers in
the corpus file, inclusive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from rag.aliases import Mention


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus file as read from disk."""

    doc_id: str  # file stem
    path: str  # file name inside the corpus folder
    text: str
    sha256: str
    pages: tuple[int, ...] = ()  # an uploaded PDF's page starts: the 1-based raw line of each page
    title: str = ""  # an upload's title (file metadata or name), used when the text has no heading


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of cleaned text that came from one raw line."""

    start: int
    end: int
    line: int  # 1-based raw line number


@dataclass(frozen=True, slots=True)
class Heading:
    """A heading line in the cleaned text; ``level`` 1 starts an article, 3 is a list item (no title)."""

    start: int
    end: int
    text: str
    level: int


@dataclass(frozen=True, slots=True)
class CleanDocument:
    """Cleaned text plus the map from cleaned offsets back to raw lines."""

    doc_id: str
    path: str
    sha256: str
    text: str
    segments: tuple[Segment, ...]
    headings: tuple[Heading, ...]
    title: str  # the document's first heading, or its file stem
    pages: tuple[int, ...] = ()  # as Document.pages: lets a raw line name its page


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a cleaned document; answers cite these."""

    sent_id: int
    doc_id: str
    title: str
    start: int
    end: int
    line_start: int
    line_end: int
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable passage made of whole sentences."""

    chunk_id: int
    doc_id: str
    title: str
    start: int
    end: int
    line_start: int
    line_end: int
    text: str
    sent_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk with its fused score and per-retriever ranks."""

    chunk: Chunk
    score: float
    keyword_rank: int | None = None
    dense_rank: int | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A question prepared by the query builder: tokens (with weights) and vectors.

    ``text`` is what retrieval and matching read: normalised and, for a chat
    follow-up, rewritten into a standalone question; ``asked`` is the user's own text.
    """

    text: str
    tokens: tuple[str, ...]  # search-mode tokens for BM25
    token_weights: tuple[float, ...]
    vector: np.ndarray  # normalised, shape (dim,)
    # Whole words with their sub-words and weights, for sentence scoring.
    terms: tuple[tuple[str, tuple[str, ...], float], ...] = ()
    # The current question alone (differs from ``vector`` when earlier turns steer retrieval).
    focus_vector: np.ndarray | None = None
    asked: str = ""  # the user's text, for display; empty means ``text``
    rewritten: bool = False  # ``text`` is a follow-up rewritten from the history
    # A follow-up's previous answer: passages near the sentences it cited are where the
    # conversation is, and retrieval favours them.
    near: str = ""
    # Words of the subject a follow-up's rewrite took from earlier turns: a sentence near what the
    # previous answer cited need not repeat them ("我们正式入驻钱塘…" after a question about a group).
    given: tuple[str, ...] = ()
    # Declared names (short, or long) the question mentions, with their other form.
    aliases: tuple[Mention, ...] = ()

    @property
    def sentence_vector(self) -> np.ndarray:
        return self.vector if self.focus_vector is None else self.focus_vector


@dataclass(frozen=True, slots=True)
class Candidate:
    """A sentence the reader scored as a possible answer, with what the judge reads of it."""

    sentence: Sentence
    hit: Hit
    score: float  # the reader's ranking score
    coverage: float  # idf-weighted share of the question's words in the sentence (and its context)
    dense: float  # similarity to the question
    context_dense: float  # similarity to the question with its chat context
    attribute: float = 1.0  # share of the asked attribute's words in the sentence (1 when none is asked)
    plain_score: float = 0.0  # the ranking score without the asked-attribute term
    model_score: float | None = None  # the trained reader's probability, when one runs


# Why a turn is declined before any sentence is weighed: it asks nothing of the articles.
SMALL_TALK_REASON = "small talk, not a question"
NOTHING_ASKED_REASON = "the question names nothing to look up"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's decision: answer or abstain, with P(the answer is right)."""

    answer: bool
    probability: float
    features: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Citation:
    """A cited sentence (or passage) with its place in the cleaned document."""

    id: int  # the [n] marker number
    doc_id: str
    title: str
    text: str
    start: int
    end: int
    line_start: int
    line_end: int
    chunk_id: int
    page: int | None = None  # 1-based page of an uploaded PDF


@dataclass(frozen=True, slots=True)
class Answer:
    """A composed answer: text with [n] markers and the citations they name."""

    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    confidence: float
    question: str  # the question actually answered (after follow-up rewriting)
    note: str = ""
    lead: str = ""  # the value or name asked for, when the cited sentence states it
    rewritten: bool = False  # ``question`` was rewritten from the chat history
