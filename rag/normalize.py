"""Question normalisation: what people type, made fit for display and for retrieval.

Owns: the two forms of a question (``display`` for showing back, ``text`` for
retrieval and matching), the rules for which characters each keeps, the
traditional-to-simplified conversion (OpenCC ``t2s``, built lazily once) and
the length limit. Pure functions; no model, no index.

What people paste or type is a question even when it holds a zero-width space,
a stray control character, an emoji or letters of another script, so nothing
here rejects a character: only input that is empty once normalised, or over the
length limit, is refused (:class:`QuestionRejected`).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

# The default limit; the service passes ``Settings.max_question_chars``.
MAX_QUESTION_CHARS = 1000

# Characters that are never shown: control (except whitespace, which is collapsed),
# invisible format characters (zero-width space/joiner, BOM, bidi overrides),
# private-use, unassigned, and lone surrogates.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Cs"})
_ZWJ = "\u200d"
_SPACES = re.compile(r"[^\S\n]+")  # whitespace runs without a line break
_BREAKS = re.compile(r"\s*\n\s*")  # whitespace runs holding a line break
# Symbol blocks that are pictographs rather than writing: arrows, technical symbols,
# box drawing, shapes, dingbats, the emoji planes. CJK symbols (㎡, radicals) and
# letter-like symbols (℃, №) sit outside these ranges and are kept.
_PICTOGRAPH_RANGES = ((0x2190, 0x21FF), (0x2300, 0x23FF), (0x2500, 0x27BF), (0x2900, 0x2BFF),
                      (0x1F000, 0x1FAFF))
# Emoji parts that are not symbols themselves: variation selectors, the keycap mark,
# skin-tone modifiers (inside the emoji plane above), tag characters.
_EMOJI_PARTS = frozenset({0xFE0E, 0xFE0F, 0x20E3})


class QuestionRejected(ValueError):
    """The input cannot be a question: empty once normalised, or over the length limit.

    The message is Chinese: it is shown to the person who typed the question.
    """


@dataclass(frozen=True, slots=True)
class NormalizedQuestion:
    """A question in its two forms.

    Attributes:
        display: the user's text without invisible/control characters, whitespace
            collapsed (line breaks kept); shown back and stored as the answer's question.
        text: for retrieval and matching: also without emoji and pictographs, in
            simplified Chinese, on one line.
    """

    display: str
    text: str


def _is_pictograph(ch: str) -> bool:
    cp = ord(ch)
    if cp in _EMOJI_PARTS:
        return True
    return unicodedata.category(ch) in ("So", "Sk") and any(lo <= cp <= hi for lo, hi in _PICTOGRAPH_RANGES)


def _visible(raw: str) -> str:
    """``raw`` without invisible characters; a joiner inside an emoji sequence stays."""
    out: list[str] = []
    for i, ch in enumerate(raw):
        if ch in "\t\r\n\v\f":
            out.append("\n" if ch == "\n" else " ")
        elif unicodedata.category(ch) not in _INVISIBLE_CATEGORIES:
            out.append(ch)
        elif ch == _ZWJ and out and _is_pictograph(out[-1]) and i + 1 < len(raw) and _is_pictograph(raw[i + 1]):
            out.append(ch)  # 👨‍👩‍👧 stays one picture on the page
    return _BREAKS.sub("\n", _SPACES.sub(" ", "".join(out))).strip()


_converter: Any = None
_converter_lock = threading.Lock()


def to_simplified(text: str) -> str:
    """Traditional Chinese to simplified (OpenCC ``t2s``); other scripts pass through."""
    global _converter
    if _converter is None:
        with _converter_lock:
            if _converter is None:
                import opencc

                _converter = opencc.OpenCC("t2s")
    return str(_converter.convert(text))


def normalize_question(raw: str, max_chars: int = MAX_QUESTION_CHARS) -> NormalizedQuestion:
    """Normalise a typed question.

    Args:
        raw: the text as received.
        max_chars: the longest question accepted, counted on the visible text.

    Raises:
        QuestionRejected: nothing is left to ask once invisible characters, emoji
            and whitespace are removed, or the question is longer than ``max_chars``.
    """
    display = _visible(raw)
    if len(display) > max_chars:
        raise QuestionRejected(f"问题过长：最多 {max_chars} 个字符，收到 {len(display)} 个。")
    text = _retrieval_form(display)
    if not text:
        raise QuestionRejected("问题为空：去掉空白、不可见字符和表情符号后没有文字，请输入要问的问题。")
    return NormalizedQuestion(display, text)


def retrieval_text(raw: str) -> str:
    """The ``text`` form of any input, never rejected (earlier chat turns, context)."""
    return _retrieval_form(_visible(raw))


def _retrieval_form(display: str) -> str:
    kept = "".join(" " if ch == _ZWJ else ch for ch in display if not _is_pictograph(ch))
    text = " ".join(kept.split())
    return to_simplified(text) if text else ""
