"""Short names the articles declare for long ones, and reading a text with them.

An article names a company once in full and declares the short form it uses
afterwards: "杭州某某电子材料股份有限公司（以下简称“某某”）". A question may use
either form and the sentence that answers it the other, so word overlap misses
the sentence that names the subject. Owns finding those declarations in the
cleaned documents and :func:`with_aliases`, which lets a text that holds one
form count as holding the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rag.text import match_key

# "（以下简称“X”）" / "（简称“X”）", after the long name.
DECLARATION = re.compile(r"[（(]\s*(?:以下)?简称\s*[“\"「『]([^”\"」』]{2,16})[”\"」』]\s*[)）]")
# The long name runs back from the declaration to the last punctuation, space or 的.
NAME_START = re.compile(r".*[，。；：！？、“”‘’《》\s的]")
MAX_NAME_CHARS = 40


@dataclass(frozen=True, slots=True)
class Alias:
    """A long name (in match form) and the short form declared for it."""

    name: str
    short: str


def _subsequence_start(text: str, short: str) -> int | None:
    """Where the shortest ending of ``text`` that holds ``short``'s characters in order starts."""
    i = len(text)
    for ch in reversed(short):
        i = text.rfind(ch, 0, i)
        if i < 0:
            return None
    return i


def mine_aliases(texts: Iterable[str]) -> tuple[Alias, ...]:
    """Every declared short name in ``texts`` (cleaned documents), with its long name.

    The long name kept is the shortest ending of the words before the declaration
    that holds the short name's characters in order ("米奥会展" of
    "…浙江米奥兰特商务会展股份有限公司" gives "米奥兰特商务会展股份有限公司"): a
    question naming the company with any prefix still contains it. A short name
    not made from its long name's characters ("广交会" for 进出口商品交易会) is skipped:
    where the long name starts cannot be told.
    """
    found: dict[tuple[str, str], Alias] = {}
    for text in texts:
        for m in DECLARATION.finditer(text):
            before = text[max(0, m.start() - MAX_NAME_CHARS) : m.start()]
            head = NAME_START.match(before)
            before = match_key(before[head.end() :] if head else before)
            short = match_key(m.group(1))
            start = _subsequence_start(before, short)
            if start is None or before[start:] == short:
                continue
            alias = Alias(before[start:], short)
            found.setdefault((alias.name, alias.short), alias)
    return tuple(found.values())


@dataclass(frozen=True, slots=True)
class Mention:
    """A declared name as a question uses it (``asked``) and its other form."""

    asked: str
    other: str


def mentions(text: str, aliases: Iterable[Alias]) -> tuple[Mention, ...]:
    """The declared names ``text`` mentions, in the form it uses (the long one when both)."""
    key = match_key(text)
    return tuple(Mention(a.name, a.short) if a.name in key else Mention(a.short, a.name)
                 for a in aliases if a.name in key or a.short in key)


def with_aliases(key: str, found: Iterable[Mention]) -> str:
    """``key`` (match form), followed by the asked form of each name it holds only in the other.

    Only the asked form is added: the long name's other words ("…股份有限公司") are
    not in a text that uses the short one.
    """
    extra = [m.asked for m in found if m.other in key and m.asked not in key]
    return "\n".join([key, *extra]) if extra else key
