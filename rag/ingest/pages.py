"""What every extractor returns: the document's pages, each with its text and where the text came from."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of extracted text (a DOCX, HTML or text file is one page)."""

    text: str
    ocr: bool = False  # the text was read from the page image
    needs_ocr: bool = False  # no text layer: OCR has not run yet


@dataclass(frozen=True, slots=True)
class Extraction:
    """A file's format, a title (may be empty) and its pages."""

    format: str
    title: str
    pages: tuple[Page, ...]

    @property
    def characters(self) -> int:
        return sum(len(p.text.strip()) for p in self.pages)


_DIGITS = re.compile(r"\d+")


def _key(line: str) -> str:
    # "第 3 页" and "3/12" repeat on every page with a different number.
    return _DIGITS.sub("#", re.sub(r"\s+", "", line))


def drop_repeated_furniture(pages: list[list[T]], text: Callable[[T], str] = str,
                            edge: int = 3) -> list[list[T]]:
    """Drop running headers and footers: lines near a page's top or bottom that recur on most pages.

    ``pages`` hold each page's lines from top to bottom (``text`` gives a line's
    text). A line counts when, with digits masked, it sits among the first or
    last ``edge`` lines of at least half the pages (and of two or more).
    Single-page documents are returned as they are.
    """
    if len(pages) < 2:
        return pages
    counts: Counter[str] = Counter()
    for lines in pages:
        counts.update({_key(text(x)) for x in lines[:edge] + lines[-edge:] if text(x).strip()})
    need = max(2, (len(pages) + 1) // 2)
    furniture = {k for k, n in counts.items() if n >= need}
    out = []
    for lines in pages:
        n = len(lines)
        out.append([x for i, x in enumerate(lines) if not ((i < edge or i >= n - edge) and _key(text(x)) in furniture)])
    return out


_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def normalise_breaks(text: str) -> str:
    """Only ``\\n`` breaks lines, so line counts here agree with ``str.splitlines`` in the cleaning."""
    return _LINE_BREAKS.sub("\n", text)


def join_pages(texts: list[str]) -> tuple[str, tuple[int, ...]]:
    """The pages as one text, and the 1-based raw line each page starts at."""
    starts, line = [], 1
    for text in texts:
        starts.append(line)
        line += text.count("\n") + 1
    return "\n".join(texts), tuple(starts)


def page_of_line(page_starts: tuple[int, ...], line: int) -> int | None:
    """The 1-based page holding raw ``line``, or None for a document without pages."""
    import bisect

    if not page_starts:
        return None
    return max(bisect.bisect_right(page_starts, line), 1)
