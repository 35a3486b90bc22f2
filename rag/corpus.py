"""Loading corpus files and cleaning PDF-extracted Chinese text.

Owns: reading ``corpus/*.txt|*.md`` (UTF-8, one file may hold many articles),
the cleaning rules (rejoining lines broken mid-sentence, dropping page
furniture, width and spacing normalisation), heading/article detection, and the
map from cleaned-text offsets back to raw line numbers.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from rag.text import CJK, normalize_width
from rag.types import CleanDocument, Document, Heading, Segment

SUFFIXES = (".txt", ".md")
LIST_ITEM = 3  # heading level of an item in a run of short lines (see _mark_list_items)
TERMINAL = "。！？!?；;…"
CLOSERS = "”’」』）)】》\"'"
# A line ending in one of these continues on the next line.
CONTINUES = "，,、：:；（(“‘《【—-·/"


@dataclass(frozen=True, slots=True)
class CorpusError:
    """A file that could not be indexed; the others still are."""

    path: str
    message: str


class CorpusLoadError(ValueError):
    """The corpus folder itself is unusable."""


def load_corpus(corpus_dir: Path) -> tuple[list[Document], list[CorpusError]]:
    """Read every ``.txt``/``.md`` file in ``corpus_dir`` (sorted by name).

    Files that are not valid UTF-8 or are empty are reported in the second list
    with a message naming the file; they do not stop the others.

    Raises:
        CorpusLoadError: the folder is missing or holds no accepted file.
    """
    if not corpus_dir.is_dir():
        raise CorpusLoadError(f"Corpus folder not found: {corpus_dir}. Set RAG_CORPUS_DIR.")
    paths = sorted(p for p in corpus_dir.iterdir() if p.suffix in SUFFIXES and p.is_file())
    paths = [p for p in paths if p.name.lower() != "readme.md"]
    if not paths:
        raise CorpusLoadError(
            f"No corpus files in {corpus_dir}: add UTF-8 files ending in {', '.join(SUFFIXES)}."
        )
    docs: list[Document] = []
    errors: list[CorpusError] = []
    seen: set[str] = set()
    for path in paths:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            errors.append(
                CorpusError(path.name, f"{path.name}: not valid UTF-8 (byte {exc.start}); skipped")
            )
            continue
        if not text.strip():
            errors.append(CorpusError(path.name, f"{path.name}: empty file; skipped"))
            continue
        if path.stem in seen:
            errors.append(
                CorpusError(path.name, f"{path.name}: another file has the id '{path.stem}'; skipped")
            )
            continue
        seen.add(path.stem)
        docs.append(Document(path.stem, path.name, text, hashlib.sha256(raw).hexdigest()))
    return docs, errors


# --- cleaning ---------------------------------------------------------------

_RUNNING_HEADER = re.compile(rf"^[{CJK}]{{0,8}}\s*[A-Z]{{2,}}(?:\s+[A-Z]{{2,}}){{2,}}$")
_PAGE_NUMBER = re.compile(r"^\d{1,3}(?:\s+\d{1,3})?$")
_ONLY_MARKS = re.compile(rf"^[^{CJK}A-Za-z0-9]+$")
# Photo captions: "… 朱旭洁 摄", "…（图片由…提供）", "…供图".
_PHOTO_CREDIT = re.compile(
    rf"(?:^|\s)[{CJK}]{{2,4}}\s*摄$|[（(]?图片.{{0,40}}(?:提供|来源)[^{CJK}]{{0,3}}[)）]?$|供图[)）]?$"
    rf"|摄\s*[/／]\s*[{CJK}]{{2,4}}$"
)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
# Author names under a title, checked before spaces are removed: "刘健 谢亮 戴炜月",
# "记者 / 李如艳  通讯员 / 张翼".
_NAMES = rf"[{CJK}]{{2,3}}(?:\s+[{CJK}]{{2,3}}){{0,5}}"
_ROLE = r"(?:文|记者|通讯员|作者|摄影)\s*[/／]\s*"
_BYLINE = re.compile(rf"^(?:{_ROLE})?{_NAMES}(?:\s+{_ROLE}{_NAMES})*(?:\s*整理报道)?$")
# A next line that opens with the last character of a word cut at the line end ("创业诉" / "求，…").
_WORD_TAIL = re.compile(rf"^[{CJK}][，、；：,;:]")
_BULLET = re.compile(r"^[◆●■□▲▶►•※★☆◎○]+\s*")
# Spaces that PDF extraction puts inside Chinese text, e.g. "2023 年", "8.2 平方公里", "施 峰".
_SPACE_CJK_DIGIT = re.compile(rf"(?<=[{CJK}0-9%.])[ \t]+(?=[{CJK}])|(?<=[{CJK}])[ \t]+(?=[0-9])")
_SPACE_PUNCT = re.compile(r"[ \t]*([，。、；：！？（）“”《》,;:!?])[ \t]*")


def _normalise_line(loose: str) -> str:
    """The kept text of a line, from its loose form (width-normalised, stripped, no bullet)."""
    line = _SPACE_CJK_DIGIT.sub("", loose)
    line = _SPACE_PUNCT.sub(lambda m: m.group(1), line)
    # "Ａ ， Ｂ" style spacing around ASCII commas between CJK: keep one space only between Latin words.
    line = re.sub(r"[ \t]{2,}", " ", line)
    return line


def _is_credit(line: str, loose: str) -> bool:
    # "朱旭洁 摄" needs the space before the name, which _normalise_line removes.
    return bool(_PHOTO_CREDIT.search(line) or _PHOTO_CREDIT.search(loose))


def _is_furniture(line: str, loose: str) -> bool:
    return bool(
        _RUNNING_HEADER.match(line)
        or _PAGE_NUMBER.match(line)
        or _ONLY_MARKS.match(line)
        or _is_credit(line, loose)
    )


def _ends_sentence(line: str) -> bool:
    stripped = line.rstrip(CLOSERS)
    return bool(stripped) and stripped[-1] in TERMINAL


def _line_width(lines: list[str]) -> int:
    """Typical width of a wrapped column in this file (capped: prose files have long lines)."""
    lengths = [len(x) for x in lines if len(x) >= 8]
    if not lengths:
        return 60
    q = statistics.quantiles(lengths, n=10)[7] if len(lengths) >= 10 else max(lengths)
    return int(min(q, 60))


def _joins_next(line: str, width: int) -> bool:
    """Does this line continue on the next one (a mid-sentence PDF line break)?"""
    if _ends_sentence(line):
        return False
    if line[-1] in CONTINUES:
        return True
    # An unclosed bracket ("时空节拍(杭" / "州)科技有限公司") closes on the next line.
    if line.count("(") + line.count("（") > line.count(")") + line.count("）"):
        return True
    if len(line) >= 0.7 * width:
        return True
    # A fragment holding a comma, or ending in a number, is prose cut mid-sentence.
    if re.search(r"[，,。]", line) and len(line) > 12:
        return True
    return bool(re.search(r"[0-9.]$", line)) and len(line) > 12


@dataclass(frozen=True, slots=True)
class _Line:
    """A raw line kept by cleaning."""

    number: int  # 1-based raw line number
    text: str
    markdown_heading: bool
    byline: bool
    bulleted: bool  # opened with a bullet mark (or is a markdown heading): a new item

    @property
    def opens_item(self) -> bool:
        return self.bulleted and not self.byline

    @property
    def starts_new(self) -> bool:
        """Something no column runs into: a bullet, a heading or a byline."""
        return self.bulleted or self.byline


def _narrow_column_joins(lines: list[_Line], idx: int, continuing: bool) -> bool:
    """Is line ``idx`` cut by a narrow column (a magazine sidebar) narrower than the file's width?

    Such a line opens a bulleted item or continues one, is about as long as its
    neighbours, the next line is no new item (no bullet, no markdown heading)
    and the run ends a sentence within a few lines. A title line never opens
    with a bullet, so one over a column of the same width stays a title.
    """
    current = lines[idx]
    line = current.text
    if not (continuing or current.opens_item):
        return False
    if idx + 1 >= len(lines) or len(line) < 10 or _ends_sentence(line) or lines[idx + 1].starts_new:
        return False
    width = len(line) + current.opens_item  # the bullet took a place in the column too
    previous = len(lines[idx - 1].text) if idx else 0
    following = lines[idx + 1].text
    if width < 0.85 * max(previous, len(following)):
        return False
    # The next line is column text too: as wide, or the end of the sentence (a byline is neither).
    if len(following) < 0.7 * width and not _ends_sentence(following):
        return False
    for nxt in lines[idx + 1 : idx + 5]:
        if nxt.starts_new:
            return False
        if _ends_sentence(nxt.text):
            return True
    return False


# Ending a title never needs these: a line ending in one is a clause cut by the column.
_CLAUSE_TAIL = "的和与为是在将把对由等并或以从被给于其"
# A line ending in a job title (optionally followed by the person's name) labels a quote.
_ROLE_LINE = re.compile(
    rf"(?:CEO|主任|经理|董事长|总裁|负责人|秘书长|书记|委员|院长|研究员|创始人|局长|处长|部长|主席|董事|所长|会长)"
    rf"[{CJK}]{{0,3}}$"
)
_CREDIT_MARK = re.compile(r"[/／]")
# Sidebar labels keep their words as a title, without the marks: "【代表企业】", "平台发展方向>>>".
_LABEL_MARKS = re.compile(r"^[【\[［]\s*|\s*[】\]］]$|\s*[>》]{2,}\s*$")
_CAPTION = re.compile(r"(?:效果|鸟瞰|示意|全景|航拍)?图$")
_CLAUSE_HEAD = re.compile(r"^(?:的|了|随着|围绕|作为|位于|为了)")
_CUT_NAME = re.compile(r"(?:有限|股份有限|研究)$")  # "…科技有限" / "公司": a company or centre name cut short
_MID_STOP = re.compile(r"[。？?；;]")
_CJK_CHAR = re.compile(rf"[{CJK}]")
_WORDS = None


def _jieba():
    """jieba's default dictionary, loaded on the first call (not at import)."""
    global _WORDS
    if _WORDS is None:
        import jieba

        jieba.setLogLevel(60)
        _WORDS = jieba.Tokenizer()
    return _WORDS


def _cut_mid_word(line: str, following: str) -> bool:
    """Does a word run across the break ("城市发" / "展研究中心")? Then the line is a column fragment."""
    if not following or not _CJK_CHAR.match(line[-1]) or not _CJK_CHAR.match(following[0]):
        return False
    # A short unpunctuated next line is a heading of its own ("…可互认" / "股权融资…" is no word "认股").
    if (len(following) <= 12 and not _ends_sentence(following) and following[-1] not in CONTINUES
            and "，" not in following):
        return False
    tail, head = line[-6:], following[:6]
    pos = 0
    for word in _jieba().lcut(tail + head, HMM=False):
        if pos < len(tail) < pos + len(word):
            return True
        pos += len(word)
    return False


def _runs_on(line: str, following: str) -> bool:
    """Does this unpunctuated line go on into ``following``? (A column cut it mid-sentence.)

    Signs: a last clause of one or two characters after a comma ("以现有产业为基础，以半"),
    a function word or a cut company name at the end ("…成立于", "…科技有限"), or a
    word that runs on across the break ("城市发" / "展").
    """
    if "，" in line and len(_CJK_CHAR.findall(line.rsplit("，", 1)[1])) < 4:
        return True
    return _ends_with_particle(line) or bool(_CUT_NAME.search(line)) or _cut_mid_word(line, following)


def _ends_with_particle(line: str) -> bool:
    """Is the last word a lone function word ("成立|于", "机制|和"), not part of one ("参与")?"""
    if line[-1:] not in _CLAUSE_TAIL:
        return False
    return len(_jieba().lcut(line[-6:], HMM=False)[-1]) == 1


def is_fragment(line: str, following: str = "") -> bool:
    """Is a short unpunctuated line a piece of a sentence cut by a narrow column, not a heading?

    Besides running on into ``following`` (:func:`_runs_on`): a sentence stop inside
    it ("…更高效？杭州城市大"), or an opening that goes on from the line before ("的…").
    """
    stripped = line.rstrip(CLOSERS)
    return bool(_MID_STOP.search(stripped) or _CLAUSE_HEAD.match(stripped)) or _runs_on(stripped, following)


def section_name(text: str) -> str | None:
    """The passage title a heading gives, or None when it names nothing.

    Headings that stay in the structure but name nothing: bylines and credits
    ("通讯员 / 许莉莎"), a person's job ("…管理办公室主任"), dates ("2020.3.25"),
    photo captions ("…效果图") and column fragments (:func:`is_fragment`).
    Sidebar labels lose their marks ("平台发展方向>>>" -> "平台发展方向").
    """
    name = _LABEL_MARKS.sub("", text)
    ok = (
        len(_CJK_CHAR.findall(name)) >= 4
        and len(name) <= 40
        and not _CREDIT_MARK.search(name)
        and not _ROLE_LINE.search(name)
        and not _CAPTION.search(name)
        and not is_fragment(name)
    )
    return name if ok else None


def _glue(left: str, right: str) -> str:
    """No space between CJK (or digit/CJK) pieces; one space between Latin words."""
    if left and right and re.match(r"[A-Za-z]", left[-1]) and re.match(r"[A-Za-z]", right[0]):
        return " "
    return ""


def _mark_list_items(headings: list[Heading], run: int = 4, width: int = 10) -> list[Heading]:
    """Runs of ``run`` or more short headings with nothing between them are list items.

    A magazine's keyword cloud or company list ("集成电路 / 柔性 / 电子显示 / …")
    comes out as one short line after another; none of them heads the text
    that follows, so they get :data:`LIST_ITEM` and name no passage.
    """
    out = list(headings)
    i = 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and out[j + 1].start == out[j].end + 1 and len(out[j + 1].text) <= width:
            j += 1
        if j - i + 1 >= run and len(out[i].text) <= width:
            out[i : j + 1] = [Heading(h.start, h.end, h.text, LIST_ITEM) for h in out[i : j + 1]]
        i = j + 1
    return out


def clean_document(doc: Document) -> CleanDocument:
    """Clean one document and keep the map back to raw lines.

    Rules: lines broken mid-sentence are rejoined (no space between CJK);
    paragraph and heading breaks stay as newlines; full-width letters/digits
    become ASCII; running headers, page numbers, lone marks and photo credits
    are dropped; numbers keep their units ("8.2 平方公里" -> "8.2平方公里").
    """
    raw_lines = doc.text.splitlines()
    kept: list[_Line] = []
    for number, raw in enumerate(raw_lines, start=1):
        stripped = normalize_width(raw).strip()
        loose = _BULLET.sub("", stripped)  # inner spaces still in place
        line = _normalise_line(loose)
        if not line or _is_furniture(line, loose):
            # A photo credit line follows its caption: drop a short caption just before it too.
            if line and _is_credit(line, loose) and kept and not _ends_sentence(kept[-1].text):
                if len(kept[-1].text) <= 20 and len(kept) >= 2 and _joins_next(kept[-2].text, 60):
                    kept.pop()
            continue
        md = _MD_HEADING.match(line)
        if md:
            kept.append(_Line(number, md.group(2).strip(), True, False, True))
        else:
            byline = bool(_BYLINE.match(re.sub(r"\s+", " ", loose)))
            kept.append(_Line(number, line, False, byline, bool(_BULLET.match(stripped))))

    width = _line_width([k.text for k in kept if not k.markdown_heading])
    parts: list[str] = []
    segments: list[Segment] = []
    headings: list[Heading] = []
    pos = 0
    continuing = False
    pending_title_idx: int | None = None
    after_heading = False
    for idx, current in enumerate(kept):
        line, md = current.text, current.markdown_heading
        if parts and not continuing:
            parts.append("\n")
            pos += 1
        elif parts and continuing:
            glue = _glue(parts[-1], line)
            if glue:
                parts.append(glue)
                pos += len(glue)
        start = pos
        parts.append(line)
        pos += len(line)
        segments.append(Segment(start, pos, current.number))
        nxt = kept[idx + 1] if idx + 1 < len(kept) else None
        joins = not md and (
            _joins_next(line, width)
            or _narrow_column_joins(kept, idx, continuing)
            or (nxt is not None and not nxt.markdown_heading and not _ends_sentence(line)
                and bool(_WORD_TAIL.match(nxt.text)))
            # A short column line cut mid-word or mid-clause ("以现有产业为基础，以半" / "导体产业…").
            or (nxt is not None and not nxt.starts_new and not _ends_sentence(line)
                and line[-1] not in CLOSERS and _runs_on(line, nxt.text))
        )
        standalone = not continuing and not joins
        is_heading = False
        if standalone and current.byline and after_heading:
            # An author byline under a title: the title starts an article; the byline is no heading.
            if pending_title_idx is not None and len(headings[pending_title_idx].text) >= 4:
                h = headings[pending_title_idx]
                headings[pending_title_idx] = Heading(h.start, h.end, h.text, 1)
            pending_title_idx = None
        elif md or (standalone and not _ends_sentence(line) and len(line) <= 40
                    and not is_fragment(line, nxt.text if nxt else "")):
            is_heading = True
            level = 1 if md else 2
            headings.append(Heading(start, pos, line, level))
            pending_title_idx = len(headings) - 1 if level == 2 else None
        elif not standalone or _ends_sentence(line):
            pending_title_idx = None
        after_heading = is_heading
        continuing = joins
    headings = _mark_list_items(headings)
    text = "".join(parts)
    title = next((name for h in headings if h.level != LIST_ITEM and (name := section_name(h.text))), doc.doc_id)
    return CleanDocument(
        doc.doc_id, doc.path, doc.sha256, text, tuple(segments), tuple(headings), title
    )


def offset_to_line(doc: CleanDocument, offset: int) -> int:
    """The raw line (1-based) that produced the cleaned character at ``offset``."""
    starts = [s.start for s in doc.segments]
    i = max(bisect.bisect_right(starts, offset) - 1, 0)
    return doc.segments[i].line


def line_span(doc: CleanDocument, start: int, end: int) -> tuple[int, int]:
    """Raw line range (inclusive) covering cleaned text ``[start, end)``."""
    return offset_to_line(doc, start), offset_to_line(doc, max(start, end - 1))


def title_at(doc: CleanDocument, offset: int) -> str:
    """The name of the nearest heading at or before ``offset`` that names a section (:func:`section_name`)."""
    best = doc.title
    for h in doc.headings:
        if h.start > offset:
            break
        if h.level != LIST_ITEM:
            best = section_name(h.text) or best
    return best
