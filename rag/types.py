"""The frozen dataclasses that move between pipeline stages.

Offsets (``start``/``end``) always index the *cleaned* text of the document
named by ``doc_id``; ``line_start``/``line_end`` are 1-based raw line numbers in
the corpus file, inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    """A corpus file as read from disk."""

    doc_id: str  # file stem
    path: str  # file name inside the corpus folder
    text: str
    sha256: str


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


@dataclass(frozen=True, slots=True)
class Answer:
    """A composed answer: text with [n] markers and the citations they name."""

    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    hits: tuple[Hit, ...]
    confidence: float
    question: str  # the question actually answered (after follow-up resolution)
    note: str = ""
