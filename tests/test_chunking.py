"""Sentence splitting and sentence-aware chunking on the real cleaned corpus."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from rag.chunking import make_chunks, split_sentences
from rag.corpus import LIST_ITEM, clean_document, load_corpus

ROOT = Path(__file__).resolve().parents[1]
TARGET, MAX, OVERLAP = 300, 420, 1
TERMINAL = "。！？!?；;"
CLOSERS = "”’」』）)"
BULLETS = "◆●■□▲▶►•※★☆◎○"


def key(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


@pytest.fixture(scope="module")
def corpus():
    """(raw lines, cleaned document, sentences, chunks) per document, with the default settings."""
    docs, errors = load_corpus(ROOT / "corpus")
    assert errors == [] and len(docs) == 5
    out = []
    sent_offset = chunk_offset = 0
    for d in docs:
        doc = clean_document(d)
        sents = split_sentences(doc, first_id=sent_offset)
        chunks = make_chunks(doc, sents, TARGET, MAX, OVERLAP, first_id=chunk_offset)
        sent_offset += len(sents)
        chunk_offset += len(chunks)
        out.append((d.text.splitlines(), doc, sents, chunks))
    return out


def all_chunks(corpus):
    return [c for *_, chunks in corpus for c in chunks]


# --- sentences ---------------------------------------------------------------------


def test_sentence_offsets_slice_their_text_exactly(corpus):
    for _, doc, sents, _ in corpus:
        assert sents
        for s in sents:
            assert doc.text[s.start : s.end] == s.text
            assert s.text == s.text.strip() and s.text
            assert s.doc_id == doc.doc_id


def test_sentences_are_in_order_without_gaps_or_overlaps(corpus):
    for _, doc, sents, _ in corpus:
        ids = [s.sent_id for s in sents]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        for a, b in zip(sents, sents[1:], strict=False):
            assert a.end <= b.start
            assert doc.text[a.end : b.start].strip() == ""  # only the break between them
        # Together the sentences hold every non-space character of the document.
        assert "".join(s.text for s in sents).replace(" ", "") == re.sub(r"\s", "", doc.text)


def test_sentences_end_at_terminal_punctuation_or_line_end(corpus):
    for _, doc, sents, _ in corpus:
        for s in sents:
            body = s.text.rstrip(CLOSERS)
            at_line_end = s.end == len(doc.text) or doc.text[s.end] == "\n"
            assert body[-1] in TERMINAL or at_line_end, s.text
            # No sentence end inside a sentence: terminal marks only in its final run.
            inner = body.rstrip(TERMINAL)
            assert not any(ch in TERMINAL for ch in inner), s.text
            assert "\n" not in s.text


def test_sentences_keep_their_closing_quotes(corpus):
    _, doc, sents, _ = corpus[0]
    quoted = "“创新的前提，是无缝对接企业需求，服务企业就是服务发展。”"
    assert quoted in doc.text
    sentence = next(s for s in sents if s.text.endswith("服务企业就是服务发展。”"))
    assert sentence.text == quoted
    # The next sentence does not start with the orphaned closing quote.
    following = sents[sents.index(sentence) + 1]
    assert not following.text.startswith("”")
    for _, _, ss, _ in corpus:
        assert not any(s.text[0] in "”’」』" for s in ss)


def test_sentences_split_at_semicolons_and_question_marks(corpus):
    _, doc, sents, _ = corpus[0]
    texts = [s.text for s in sents]
    assert "今年1至10月，杭州综合保税区实现规模以上工业企业总产值105.4亿元，同比增长21.03%；" in texts
    assert "实现货物进出口总值206.4亿元，同比增长4.5%；" in texts
    _, doc2, sents2, _ = corpus[2]
    assert "直面转型升级压力加大、创新发展动力不足等突出问题，如何赋予区域发展新的蓬勃动力？" in [
        s.text for s in sents2
    ]


# --- chunks --------------------------------------------------------------------------


def test_chunk_offsets_slice_their_text_exactly(corpus):
    for _, doc, _, chunks in corpus:
        assert chunks
        for c in chunks:
            assert doc.text[c.start : c.end] == c.text
            assert c.doc_id == doc.doc_id


def test_chunks_are_whole_consecutive_sentences(corpus):
    for _, _, sents, chunks in corpus:
        by_id = {s.sent_id: s for s in sents}
        for c in chunks:
            ids = list(c.sent_ids)
            assert ids and ids == list(range(ids[0], ids[0] + len(ids)))
            assert c.start == by_id[ids[0]].start
            assert c.end == by_id[ids[-1]].end
        # No sentence is left out of every chunk.
        covered = {i for c in chunks for i in c.sent_ids}
        assert covered == set(by_id)


def test_chunk_ids_are_global_and_consecutive(corpus):
    ids = [c.chunk_id for c in all_chunks(corpus)]
    assert ids == list(range(len(ids)))


def test_chunk_sizes(corpus):
    chunks = all_chunks(corpus)
    sizes = [len(c.text) for c in chunks]
    in_range = sum(100 <= n <= MAX for n in sizes)
    assert in_range / len(sizes) >= 0.85, sorted(sizes)[:40]
    assert sorted(sizes)[len(sizes) // 2] >= 250  # the median is near the target
    for c in chunks:
        if len(c.text) > MAX:
            assert len(c.sent_ids) == 1


@pytest.mark.parametrize(("target", "max_chars"), [(120, 160), (200, 240), (300, 420), (80, 80)])
def test_no_chunk_passes_max_unless_one_sentence_does(corpus, target, max_chars):
    for _, doc, sents, _ in corpus:
        for c in make_chunks(doc, sents, target, max_chars, OVERLAP):
            if len(c.text) > max_chars:
                assert len(c.sent_ids) == 1, (doc.doc_id, len(c.text), c.sent_ids)


def test_consecutive_chunks_overlap_by_one_whole_sentence(corpus):
    """Overlap is the last sentence of the previous chunk, except where a chunk starts a
    section (at a heading: sections start fresh) or that sentence is too long to share."""
    overlapping = fresh_at_heading = 0
    for _, doc, sents, chunks in corpus:
        by_id = {s.sent_id: s for s in sents}
        heading_at = {h.start: h.level for h in doc.headings if h.level != LIST_ITEM}  # list items head nothing
        for a, b in zip(chunks, chunks[1:], strict=False):
            last = by_id[a.sent_ids[-1]]
            shared = set(a.sent_ids) & set(b.sent_ids)
            if b.start in heading_at:
                assert not shared
                assert b.sent_ids[0] == a.sent_ids[-1] + 1
                fresh_at_heading += 1
            elif len(last.text) <= TARGET // 2 and by_id[b.sent_ids[-1]].end - last.start <= MAX:
                assert b.sent_ids[0] == a.sent_ids[-1], (doc.doc_id, a.chunk_id)
                assert shared == {last.sent_id}
                overlapping += 1
            else:
                assert b.sent_ids[0] == a.sent_ids[-1] + 1
    assert overlapping > len(all_chunks(corpus)) // 3
    assert fresh_at_heading > 0


def test_chunks_never_cross_a_level_one_heading(corpus):
    for _, doc, _, chunks in corpus:
        starts = [h.start for h in doc.headings if h.level == 1]
        for c in chunks:
            assert not any(c.start < h < c.end for h in starts), (doc.doc_id, c.chunk_id)


def test_no_overlap_across_a_level_one_heading(corpus):
    _, doc, sents, chunks = corpus[0]
    heading = next(h for h in doc.headings if h.text == "深化街区服务塑造青年“留杭”强磁场")
    assert heading.level == 1
    first = next(c for c in chunks if c.start == heading.start)
    before = chunks[chunks.index(first) - 1]
    assert before.end < heading.start
    assert not set(before.sent_ids) & set(first.sent_ids)


def test_chunk_and_sentence_lines_hold_their_first_and_last_characters(corpus):
    for lines, doc, sents, chunks in corpus:
        for item in [*sents, *chunks]:
            assert 1 <= item.line_start <= item.line_end <= len(lines)
            first_seg = next(s for s in doc.segments if s.start <= item.start < s.end)
            last_seg = next(s for s in doc.segments if s.start < item.end <= s.end)
            assert (first_seg.line, last_seg.line) == (item.line_start, item.line_end)
            head = key(doc.text[item.start : min(item.end, first_seg.end)])
            tail = key(doc.text[max(item.start, last_seg.start) : item.end])
            raw_first = key(lines[item.line_start - 1])
            raw_last = key(lines[item.line_end - 1])
            assert head in raw_first or head in raw_first.lstrip(BULLETS), (doc.doc_id, item.line_start, head)
            assert tail in raw_last or tail in raw_last.lstrip(BULLETS), (doc.doc_id, item.line_end, tail)


def test_a_known_passage_maps_to_its_raw_lines(corpus):
    lines, doc, sents, _ = corpus[0]
    s = next(s for s in sents if s.text.startswith("今年1至10月，杭州综合保税区"))
    assert (s.line_start, s.line_end) == (17, 20)
    assert lines[16].startswith("今年1至10月")


def test_target_larger_than_max_is_rejected(corpus):
    _, doc, sents, _ = corpus[0]
    with pytest.raises(ValueError, match="must not exceed"):
        make_chunks(doc, sents, 500, 420, 1)


def test_zero_overlap_gives_disjoint_chunks(corpus):
    _, doc, sents, _ = corpus[0]
    chunks = make_chunks(doc, sents, TARGET, MAX, 0)
    ids = [i for c in chunks for i in c.sent_ids]
    assert ids == sorted(set(ids)) == [s.sent_id for s in sents]
