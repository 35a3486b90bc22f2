"""Sentence splitting and sentence-aware chunking, with offsets into the cleaned text.

Sentences end at 。！？；(and ! ? ;), keeping closing quotes, and at line breaks
(paragraph and heading ends). Chunks are runs of whole sentences of about
``target`` characters that never cross an article boundary; consecutive chunks
overlap by whole sentences.
"""

from __future__ import annotations

import re

from rag.corpus import LIST_ITEM, line_span, title_at
from rag.types import Chunk, CleanDocument, Sentence

_SENTENCE_END = re.compile(r"[。！？!?；;]+[”’」』）)]*|\n")


def split_sentences(doc: CleanDocument, first_id: int = 0) -> list[Sentence]:
    """Split a cleaned document into sentences with offsets and raw line ranges."""
    out: list[Sentence] = []
    text = doc.text
    pos = 0
    bounds: list[tuple[int, int]] = []
    for m in _SENTENCE_END.finditer(text):
        end = m.start() if m.group() == "\n" else m.end()
        bounds.append((pos, end))
        pos = m.end()
    bounds.append((pos, len(text)))
    for start, end in bounds:
        # Trim whitespace so offsets slice exactly the sentence text.
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start >= end:
            continue
        lo, hi = line_span(doc, start, end)
        out.append(
            Sentence(
                sent_id=first_id + len(out),
                doc_id=doc.doc_id,
                title=title_at(doc, start),
                start=start,
                end=end,
                line_start=lo,
                line_end=hi,
                text=text[start:end],
            )
        )
    return out


def make_chunks(
    doc: CleanDocument,
    sentences: list[Sentence],
    target: int,
    max_chars: int,
    overlap: int,
    first_id: int = 0,
) -> list[Chunk]:
    """Pack whole sentences into chunks of about ``target`` characters.

    A chunk closes before it would pass ``max_chars``, and at an article
    heading (level 1). A level-2 heading closes a chunk that is already at
    least half the target, so sections start fresh when they can. The next
    chunk starts with the last ``overlap`` sentences of the previous one.

    Raises:
        ValueError: ``target`` is larger than ``max_chars``.
    """
    if target > max_chars:
        raise ValueError(f"chunk target ({target}) must not exceed chunk max ({max_chars})")
    heading_level = {h.start: h.level for h in doc.headings if h.level != LIST_ITEM}
    chunks: list[Chunk] = []
    group: list[Sentence] = []

    def span(sents: list[Sentence]) -> int:
        return sents[-1].end - sents[0].start

    def flush() -> None:
        start, end = group[0].start, group[-1].end
        lo, hi = line_span(doc, start, end)
        chunks.append(
            Chunk(
                chunk_id=first_id + len(chunks),
                doc_id=doc.doc_id,
                title=title_at(doc, start),
                start=start,
                end=end,
                line_start=lo,
                line_end=hi,
                text=doc.text[start:end],
                sent_ids=tuple(s.sent_id for s in group),
            )
        )

    fresh = 0  # sentences in the group that are not overlap from the previous chunk
    for sent in sentences:
        level = heading_level.get(sent.start)
        breaks = group and (
            level == 1
            or (level == 2 and span(group) >= target // 2)
            or sent.end - group[0].start > max_chars
            or span(group) >= target
        )
        if breaks and fresh:
            flush()
            keep = [] if level else group[-overlap:] if overlap else []
            # Overlap only with sentences short enough to leave room for new text,
            # and never so much that the overlap pushes this sentence past max_chars.
            while keep and (span(keep) > target // 2 or sent.end - keep[0].start > max_chars):
                keep = keep[1:]
            group = keep
            fresh = 0
        elif breaks and level == 1:
            group = []
        group.append(sent)
        fresh += 1
    if group and fresh:
        flush()
    return chunks
