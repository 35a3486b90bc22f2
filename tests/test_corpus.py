"""Cleaning of PDF-extracted Chinese, on the real corpus files (one test per rule).

Every example below is copied from a file in ``corpus/``; line numbers are the
raw 1-based line numbers of that file.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

import pytest

from rag.chunking import make_chunks, split_sentences
from rag.corpus import (
    LIST_ITEM,
    CorpusLoadError,
    clean_document,
    is_fragment,
    line_span,
    load_corpus,
    offset_to_line,
    section_name,
    title_at,
)
from rag.text import CJK, normalize_width
from rag.types import Document

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "corpus"
FILES = {p.name[:3]: p for p in sorted(CORPUS.glob("*.txt"))}
BULLETS = "◆●■□▲▶►•※★☆◎○"


def key(text: str) -> str:
    """NFKC, no whitespace: the form for comparing cleaned text with raw lines."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def raw_lines(prefix: str) -> list[str]:
    return FILES[prefix].read_text(encoding="utf-8").splitlines()


def snippet(prefix: str, first: int, last: int) -> Document:
    """A Document made of raw lines ``first..last`` (inclusive) of a real corpus file."""
    text = "\n".join(raw_lines(prefix)[first - 1 : last]) + "\n"
    return Document(f"{prefix}-snippet", FILES[prefix].name, text, hashlib.sha256(text.encode()).hexdigest())


@pytest.fixture(scope="module")
def documents():
    docs, errors = load_corpus(CORPUS)
    assert errors == []
    return {d.doc_id[:3]: d for d in docs}


@pytest.fixture(scope="module")
def cleaned(documents):
    return {k: clean_document(d) for k, d in documents.items()}


def kept_lines(doc) -> set[int]:
    return {s.line for s in doc.segments}


# --- rejoining lines broken mid-sentence ---------------------------------------


def test_line_broken_mid_sentence_is_rejoined_without_space(cleaned):
    lines = raw_lines("002")
    assert lines[2].endswith("如何赋予区域发") and lines[4].startswith("展新的蓬勃动力")
    text = cleaned["002"].text
    assert "如何赋予区域发展新的蓬勃动力？钱塘新区的破题之道是" in text
    # The next break (line 5 -> 7) inside the same sentence is rejoined too.
    assert "再造六大产业大平台，吸引大企业" in text


def test_number_split_from_its_unit_across_blank_lines_is_rejoined(cleaned):
    lines = raw_lines("000")
    assert lines[16].endswith("总产值105.4") and not "".join(lines[17:19]).strip() and lines[19].startswith("亿元")
    text = cleaned["000"].text
    assert "实现规模以上工业企业总产值105.4亿元，同比增长21.03%" in text
    assert "105.4\n" not in text


def test_word_cut_at_line_end_is_rejoined_even_when_line_is_short(cleaned):
    # 000 line 76 "面对街区群众较为集中的创业诉" is short and has no comma, but line 78 opens "求，".
    lines = raw_lines("000")
    assert lines[75] == "面对街区群众较为集中的创业诉" and lines[77].startswith("求，")
    doc = cleaned["000"]
    assert "面对街区群众较为集中的创业诉求，推出文新" in doc.text
    assert all(h.text != "面对街区群众较为集中的创业诉" for h in doc.headings)


def test_unclosed_bracket_is_rejoined_with_the_next_line(cleaned):
    lines = raw_lines("003")
    assert lines[23] == "扎根于青山湖科技城的时空节拍(杭" and lines[25].startswith("州)科技有限公司")
    assert "扎根于青山湖科技城的时空节拍(杭州)科技有限公司是国内3D数字人领域的探索者" in cleaned["003"].text


def test_rejoining_works_on_a_document_built_from_a_snippet():
    doc = clean_document(snippet("002", 1, 7))
    assert doc.text.splitlines() == [
        "刚满一周岁，钱塘新区步入发展新阶段。",
        "直面转型升级压力加大、创新发展动力不足等突出问题，如何赋予区域发展新的蓬勃动力？"
        "钱塘新区的破题之道是：“产业立区”——再造六大产业大平台，吸引大企业，培育大项目，"
        "营造大生态，在发展中持续注入大智慧。",
    ]


def test_narrow_sidebar_column_is_rejoined(cleaned):
    """A sidebar set in a column narrower than the page: bulleted items run over 16-character lines."""
    doc = cleaned["002"]
    assert "\n杭州江东芯谷\n区域范围：河庄街道行政管理区域范围内；义蓬街道行政管理区域范围为其拓展区域。\n" in doc.text
    assert "\n核心区块：位于钱塘新区江东区块西北部，总面积约15.6平方公里。\n" in doc.text
    # The platform name over the items stays a heading; the item's first line is no heading.
    assert any(h.text == "杭州江东芯谷" for h in doc.headings)
    assert not any(h.text.startswith("区域范围：") or h.text.startswith("核心区块：") for h in doc.headings)


def test_title_over_a_column_of_the_same_width_stays_a_title(cleaned):
    """Geometry alone cannot tell a title from a column line; no bullet, so it stays a title."""
    doc = cleaned["002"]
    assert "\n杭州投资最大的集成电路项目落户新区\n眼下，" in doc.text
    assert "\n松下家电：百年老品牌迈步向未来\n" in doc.text  # not run into its byline


def test_narrow_column_rejoin_on_a_made_up_document():
    text = "\n".join([
        "◆青萝湾智造园",
        "◎区域范围：青萝街道行政管理区域",
        "范围内；白鹭街道行政管理区域范围",
        "为其拓展区域。",
        "◎核心区块：位于钱塘区东部，总面积",
        "约3.6平方公里。",
        "园区简介",
        "记者 / 林晓",
    ])
    doc = clean_document(Document("made-up", "made-up.txt", text, hashlib.sha256(text.encode()).hexdigest()))
    assert doc.text.splitlines() == [
        "青萝湾智造园",
        "区域范围：青萝街道行政管理区域范围内；白鹭街道行政管理区域范围为其拓展区域。",
        "核心区块：位于钱塘区东部，总面积约3.6平方公里。",
        "园区简介",
        "记者 / 林晓",
    ]
    # Every cleaned line still maps back to the raw lines it came from.
    second = doc.text.index("区域范围")
    assert line_span(doc, second, doc.text.index("\n", second)) == (2, 4)


# --- paragraphs and headings -----------------------------------------------------


def test_paragraph_breaks_stay_line_breaks(cleaned):
    text = cleaned["000"].text
    assert "钱塘江畔，正在澎湃开放发展的新动能。\n沿着十九号大街一路往南" in text
    assert "\n\n" not in text  # blank raw lines collapse into one break


def test_markdown_headings_become_level_one_headings(cleaned):
    doc = cleaned["000"]
    md_lines = [line[3:].strip() for line in raw_lines("000") if line.startswith("## ")]
    assert len(md_lines) == 5
    level_one = [h.text for h in doc.headings if h.level == 1]
    for line in md_lines:
        assert any(key(h) == key(line) for h in level_one), line
    first = next(h for h in doc.headings if h.text == "杭州综保区：打造外向型经济新引擎")
    assert first.level == 1
    assert doc.text[first.start : first.end] == first.text
    assert "\n杭州综保区：打造外向型经济新引擎\n" in doc.text


def test_short_heading_line_stays_its_own_line(cleaned):
    doc = cleaned["002"]
    assert raw_lines("002")[56].strip() == "变局与“火种”"
    assert "\n变局与“火种”\n" in doc.text
    assert any(h.text == "变局与“火种”" for h in doc.headings)


def test_title_followed_by_byline_starts_an_article(cleaned):
    doc = cleaned["000"]
    # 000 lines 97/99: "多措并举保障新业态劳动者权益" then the byline "李晟瞳 高峻".
    heading = next(h for h in doc.headings if h.text == "多措并举保障新业态劳动者权益")
    assert heading.level == 1
    # Bylines stay in the text as their own line but are never headings (nor titles).
    for byline in ("刘健谢亮戴炜月李佳", "李晟瞳高峻", "赵艺乔"):
        assert f"\n{byline}\n" in doc.text
        assert all(h.text != byline for h in doc.headings)
    assert next(h for h in cleaned["003"].headings if h.text.startswith("杭州城西科创大走廊")).level == 1


# --- width normalisation --------------------------------------------------------


def to_full_width(text: str) -> str:
    """What some PDF extractors emit: ASCII letters, digits, % and . as full-width forms."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and (c.isalnum() or c in "%.") else c for c in text)


def test_full_width_letters_and_digits_become_ascii_and_chinese_punctuation_stays():
    # The corpus holds no full-width letters/digits, so this applies the rule to real lines.
    line = raw_lines("000")[19]  # "亿元，同比增长21.03%；实现货物进出口总值206.4亿元，…"
    wide = to_full_width(line)
    assert wide != line and "２１．０３％" in wide
    assert normalize_width(wide) == line
    assert normalize_width("杭州综保区：打造外向型经济新引擎，ＭＡＸ科技园。") == "杭州综保区：打造外向型经济新引擎，MAX科技园。"

    ascii_doc = snippet("000", 3, 20)  # holds ：in the "## 杭州综保区：…" heading
    wide_doc = Document("wide", "wide.txt", to_full_width(ascii_doc.text), "0")
    clean_ascii, clean_wide = clean_document(ascii_doc), clean_document(wide_doc)
    assert clean_wide.text == clean_ascii.text
    assert "总产值105.4亿元，同比增长21.03%；" in clean_wide.text
    for mark in "，。：；":
        assert mark in clean_wide.text
    assert not re.search(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]", clean_wide.text)


def test_ideographic_space_from_the_corpus_is_removed(documents, cleaned):
    lines = raw_lines("004")
    assert lines[596].startswith("\u3000")  # a real U+3000 in 004
    assert "\u3000" not in cleaned["004"].text
    assert all("\u3000" not in d.text for d in cleaned.values())
    assert not re.search(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]", "".join(d.text for d in cleaned.values()))


# --- page furniture and photo credits --------------------------------------------


def test_running_headers_are_dropped(cleaned):
    lines = raw_lines("002")
    assert lines[144].strip() == "HANGZHOU QIANTANG NEW AREA"
    assert lines[4595].strip() == "瞭望台 HANGZHOU QIANTANG NEW AREA"
    doc = cleaned["002"]
    assert "HANGZHOU QIANTANG NEW AREA" not in doc.text
    assert {145, 4596}.isdisjoint(kept_lines(doc))
    # The sentence around the header is joined across it.
    assert "从重打击侵犯知识产权行为。" in doc.text


def test_page_numbers_are_dropped(cleaned):
    lines = raw_lines("002")
    assert lines[5168].strip() == "84 85"
    doc = cleaned["002"]
    assert 5169 not in kept_lines(doc)
    for d in cleaned.values():
        assert not any(re.fullmatch(r"\d{1,3}(?: \d{1,3})?", line) for line in d.text.splitlines()), d.doc_id


def test_lone_marks_are_dropped(cleaned):
    lines = raw_lines("004")
    assert lines[522].strip() == "√" and lines[5257].strip() == "“"
    assert {523, 5258}.isdisjoint(kept_lines(cleaned["004"]))
    for d in cleaned.values():
        assert all(re.search(rf"[{CJK}A-Za-z0-9]", line) for line in d.text.splitlines()), d.doc_id


def test_photo_credits_and_their_captions_are_dropped(cleaned):
    cases = {
        "001": (9, "杭州高新区(滨江)物联网街 朱旭洁 摄", "朱旭洁"),
        "003": (12, "(图片由杭州城西科创大走廊管委会提供)", "图片由"),
        "000": (66, "杭州综保区持续优化通关环境（图片由杭州综合保税区管理办公室提供）", "图片由"),
    }
    for prefix, (number, line, fragment) in cases.items():
        assert raw_lines(prefix)[number - 1].strip() == line
        doc = cleaned[prefix]
        assert number not in kept_lines(doc)
        assert fragment not in doc.text
    # "摄/name" credits under pictures in 004, e.g. line 5214 "晚会 摄/周乐蒙".
    assert raw_lines("004")[5213].strip() == "晚会 摄/周乐蒙"
    assert "摄/" not in cleaned["004"].text
    # The caption line just before the 003 credit goes too ...
    assert raw_lines("003")[10] == "杭州城西科创大走廊商务楼"
    assert 11 not in kept_lines(cleaned["003"])
    assert "商务楼" not in cleaned["003"].text
    # ... and the sentence the picture interrupted (lines 7 and 14) is whole again.
    assert raw_lines("003")[6].endswith("产业深") and raw_lines("003")[13].startswith("度转型升级")
    assert "技术革命性突破、生产要素创新性配置、产业深度转型升级所带来的新时代先进生产力" in cleaned["003"].text


# --- numbers and units --------------------------------------------------------------


def test_numbers_stay_with_their_units(cleaned):
    lines = raw_lines("004")
    assert "24.5 平方公里" in lines[3648]
    assert lines[2].startswith("2023 年是改革开放 45 周年")
    assert lines[95].startswith("4 月 18 日，国家统计局")
    text = cleaned["004"].text
    assert "江海之城共计24.5平方公里，东至头蓬快速路" in text
    assert "2023年是改革开放45周年，“八八战略”实施20周年" in text
    assert "4月18日，国家统计局发布2023年一季度国民经济运行情况" in text
    # "仅 8.2 平" / "方公里" in 002: spacing removed and the unit rejoined across the break.
    assert "实体化运作产业平台仅8.2平方公里" in cleaned["002"].text
    for d in cleaned.values():
        assert not re.search(rf"[0-9][ \t]+[{CJK}]|[{CJK}][ \t]+[0-9]", d.text), d.doc_id


# --- the map back to raw lines ------------------------------------------------------


def test_every_segment_maps_back_to_its_raw_line(documents, cleaned):
    for prefix, doc in cleaned.items():
        lines = documents[prefix].text.splitlines()
        assert doc.segments
        previous_end = 0
        for seg in doc.segments:
            assert previous_end <= seg.start < seg.end <= len(doc.text)
            previous_end = seg.end
            piece = key(doc.text[seg.start : seg.end])
            raw = key(lines[seg.line - 1])
            assert piece in raw or piece in raw.lstrip(BULLETS), (prefix, seg.line, piece, raw)
            assert offset_to_line(doc, seg.start) == seg.line
            assert offset_to_line(doc, seg.end - 1) == seg.line
        # Raw line numbers only grow, and every cleaned character outside a segment is a break/glue.
        numbers = [s.line for s in doc.segments]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        covered = set()
        for seg in doc.segments:
            covered.update(range(seg.start, seg.end))
        assert all(doc.text[i] in "\n " for i in range(len(doc.text)) if i not in covered)


def test_line_span_of_a_rejoined_sentence_covers_both_raw_lines(cleaned):
    doc = cleaned["000"]
    start = doc.text.index("今年1至10月，杭州综合保税区")
    end = doc.text.index("同比增长21.03%") + len("同比增长21.03%")
    assert line_span(doc, start, end) == (17, 20)


# --- load_corpus ----------------------------------------------------------------------


def test_load_corpus_reports_bad_files_by_name_and_loads_the_rest(tmp_path):
    (tmp_path / "000_cd6546ea3580b673.txt").write_bytes(FILES["000"].read_bytes())
    (tmp_path / "001_fb9e0f94ea2c9b85.md").write_bytes(FILES["001"].read_bytes())
    (tmp_path / "latin1.txt").write_bytes("钱塘新区".encode("gb18030"))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text(" \n\n\t\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# corpus\n\nThis is not an article.\n", encoding="utf-8")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")
    docs, errors = load_corpus(tmp_path)
    assert [d.doc_id for d in docs] == ["000_cd6546ea3580b673", "001_fb9e0f94ea2c9b85"]
    assert docs[0].sha256 == hashlib.sha256(FILES["000"].read_bytes()).hexdigest()
    by_path = {e.path: e.message for e in errors}
    assert set(by_path) == {"latin1.txt", "empty.txt", "blank.md"}
    assert "latin1.txt" in by_path["latin1.txt"] and "UTF-8" in by_path["latin1.txt"]
    assert "empty.txt" in by_path["empty.txt"] and "empty" in by_path["empty.txt"]
    assert "blank.md" in by_path["blank.md"]


def test_load_corpus_accepts_a_utf8_bom(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + FILES["003"].read_bytes())
    docs, errors = load_corpus(tmp_path)
    assert errors == [] and not docs[0].text.startswith("\ufeff")


def test_load_corpus_missing_folder_raises_with_a_clear_message(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CorpusLoadError, match="not found") as info:
        load_corpus(missing)
    assert str(missing) in str(info.value)


def test_load_corpus_without_accepted_files_raises(tmp_path):
    (tmp_path / "README.md").write_text("# only a readme\n", encoding="utf-8")
    (tmp_path / "data.json").write_text("{}", encoding="utf-8")
    with pytest.raises(CorpusLoadError, match=r"No corpus files") as info:
        load_corpus(tmp_path)
    assert ".txt" in str(info.value) and str(tmp_path) in str(info.value)


def test_readme_in_the_real_corpus_is_ignored(documents):
    assert sorted(documents) == ["000", "001", "002", "003", "004"]
    assert (CORPUS / "README.md").exists()


# --- titles -------------------------------------------------------------------------------


def test_every_sentence_and_chunk_has_a_title(cleaned):
    for doc in cleaned.values():
        sentences = split_sentences(doc)
        chunks = make_chunks(doc, sentences, 300, 420, 1)
        assert all(s.title.strip() for s in sentences), doc.doc_id
        assert all(c.title.strip() for c in chunks), doc.doc_id
        names = {section_name(h.text) for h in doc.headings} | {doc.title}
        assert {c.title for c in chunks} <= names


def test_chunks_of_an_article_carry_its_heading_as_title(cleaned):
    doc = cleaned["000"]
    heading = next(h for h in doc.headings if h.text == "杭州综保区：打造外向型经济新引擎")
    following = next(h for h in doc.headings if h.start > heading.start)
    assert following.text == "加快制度创新步伐"
    chunks = make_chunks(doc, split_sentences(doc), 300, 420, 1)
    inside = [c for c in chunks if heading.end < c.start < following.start]
    assert inside, "the article's opening chunks"
    assert all(c.title == "杭州综保区：打造外向型经济新引擎" for c in inside)
    # The byline under the heading does not become the title.
    assert title_at(doc, doc.text.index("钱塘江畔，正在澎湃")) == "杭州综保区：打造外向型经济新引擎"
    assert doc.title == "以改革创新实现稳进提质"


def chunk_titles(cleaned) -> set[str]:
    titles: set[str] = set()
    for doc in cleaned.values():
        titles |= {c.title for c in make_chunks(doc, split_sentences(doc), 300, 420, 1)}
    return titles


def test_passage_titles_are_headings_not_sentence_fragments(cleaned):
    """Read against the corpus: a title is a whole heading, never a column line cut mid-sentence."""
    titles = chunk_titles(cleaned)
    for title in titles:
        inner = title.rstrip("”’」』）)】》\"'")
        assert len(re.findall(f"[{CJK}]", title)) >= 4, title
        # (No 与 here: "…企业参与" is a whole word.)
        assert inner[-1] not in "，,、：:（(“《的和为是在将把对由等并或以从被给于其", title
        assert not re.search(r"[。？?；;]", inner), title  # a sentence stop inside: prose
        assert not re.search(r"[/／]", title), title  # bylines and photo credits
        assert not re.search(r"(?:主任|总经理|董事长|负责人|秘书长)$", title), title  # a person's job
        assert not re.fullmatch(r"[\d.()（）年月\s-]+", title), title  # a date
    # Column lines cut mid-word or mid-clause (raw lines of 002) are neither titles nor headings.
    for fragment in ("以现有产业为基础，以半", "浙江大学区域与城市发", "以临江区块现有产业为",
                     "如何让城市治理更高效？杭州城市大"):
        assert fragment not in titles
        assert all(h.text != fragment for h in cleaned["002"].headings)
    # Real article and section headings of the corpus still name the text under them.
    for prefix, heading in (("000", "杭州综保区：打造外向型经济新引擎"), ("000", "以高能级平台支撑高水平开放"),
                            ("002", "杭州江东芯谷"), ("002", "杭州投资最大的集成电路项目落户新区"),
                            ("002", "新区加速生命健康科创高地建设"), ("004", "钱塘区大手笔布局优化营商环境")):
        doc = cleaned[prefix]
        found = next(h for h in doc.headings if h.text == heading)
        assert title_at(doc, found.end + 1) == heading


def test_a_column_line_cut_mid_word_is_a_fragment_and_a_short_title_is_not():
    # Made-up lines: a word running on across the break, a one-character clause after a comma,
    # a function word at the end; and whole headings that must stay headings.
    assert is_fragment("专家来自区域与城市发", "展研究中心，长期研究开发区的规划与建设。")
    assert is_fragment("以新材料为基础，以光", "电产业为主导方向，重点发展显示材料。")
    assert is_fragment("新园区的产业布局将")
    assert is_fragment("效率更高了吗？园区的答")
    assert not is_fragment("打造开放型经济新高地", "今年以来，园区新增企业200余家。")
    assert not is_fragment("政策服务“可互认”", "人才落户“更便利”")
    assert not is_fragment("路通了，生意也好做了")


def test_a_run_of_short_lines_is_a_list_and_names_no_passage(cleaned):
    """A keyword cloud in 002 ("集成电路 / 柔性 / 电子显示 / 智能终端 / …") is list items, not headings."""
    doc = cleaned["002"]
    items = [h for h in doc.headings if h.text in ("电子显示", "智能终端", "人工智能", "虚拟显示")]
    assert len(items) == 4 and all(h.level == LIST_ITEM for h in items)
    last = max(items, key=lambda h: h.start)
    assert title_at(doc, last.end + 1) not in {h.text for h in items}
    # Two title lines in a row are no list ("轻装上阵" / "钱塘再出发").
    assert all(h.level != LIST_ITEM for h in doc.headings if h.text in ("轻装上阵", "钱塘再出发"))


def test_column_line_cut_mid_word_or_clause_is_rejoined(cleaned):
    """Raw lines 1469/1471 and 2990/2992 of 002: short column lines broken inside a word."""
    text = cleaned["002"].text
    assert "以现有产业为基础，以半导体产业、未来产业为主导方向" in text
    assert "浙江大学区域与城市发展研究中心执行主任" in text
    # A subtitle ending in a whole word ("参与") stays its own line.
    assert "\n线上线下230余家企业参与\n" in text
