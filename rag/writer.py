"""The writer stage: turns the judge's verdict and the reader's pick into an Answer.

Owns the extractive answer (the default): the lead value or name asked for when
the cited sentence states it, the cited sentence(s) trimmed to the length
budget with [n] markers, exact citations, the cited passages leading the hits,
and the not-found answer that shows the closest passages. The optional LLM
writer (rag.llm) is the other implementation of the same step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag import lang
from rag.reader import Group, group_text
from rag.text import match_key
from rag.types import NOTHING_ASKED_REASON, SMALL_TALK_REASON, Answer, Citation, Hit, Query, Verdict

if TYPE_CHECKING:
    from rag.index import IndexData

ABSTAIN_TEXT = lang.NOT_FOUND + " 以下是最接近的段落，供参考。"
MARKER_ROOM = 4  # characters kept beside each cited text for its "[n]" marker
Groups = Sequence[Group]


class Writer(Protocol):
    def write(self, query: Query, verdict: Verdict, groups: Groups, hits: Sequence[Hit],
              lead: str | None = None) -> Answer: ...


@dataclass(frozen=True, slots=True)
class WriterConfig:
    max_chars: int = 150  # the answer's length budget
    lead_gap: int = 12  # a value must follow the question's words within this many characters
    # The room kept for each cited text beside the best one, which gets what it needs of the rest:
    # it holds the value the answer leads with.
    other_chars: int = 60
    # Each cited text shown needs this much room to say anything: a budget too small for two
    # shows one (RAG_ANSWER_MAX_CHARS may be as low as 20).
    min_piece: int = 30
    # Cited texts that share the budget; more are shown only in the room these leave.
    sharing: int = 2


# Turns declined before anything was weighed get a word on what to ask instead of passages:
# the passages closest to "你好" or "？？？" are noise.
NOT_QUESTIONS = {SMALL_TALK_REASON: lang.SMALL_TALK_REPLY, NOTHING_ASKED_REASON: lang.NOTHING_ASKED_REPLY}


def abstain(query: Query, verdict: Verdict, hits: Sequence[Hit]) -> Answer:
    """The not-found answer: no citations, the closest passages as hits (none for a turn that
    asks nothing of the articles)."""
    if verdict.reason in NOT_QUESTIONS:
        text, hits = NOT_QUESTIONS[verdict.reason], ()
    else:
        text = ABSTAIN_TEXT
    return Answer(text, True, (), tuple(hits), verdict.probability, shown_question(query),
                  rewritten=query.rewritten, note=verdict.reason)


def shown_question(query: Query) -> str:
    """The question an answer names: the rewritten one for a follow-up, else what was typed."""
    return query.text if query.rewritten else (query.asked or query.text)


def closest_passages(hits: Sequence[Hit], n: int = 3, chars: int = 80) -> list[str]:
    """The passages an abstaining answer offers instead, one line each, for text clients."""
    out = []
    for i, hit in enumerate(hits[:n], start=1):
        c = hit.chunk
        text = " ".join(c.text.split())
        text = text if len(text) <= chars else text[: chars - 1] + "…"
        out.append(f"{i}. 《{c.title}》（{c.doc_id}，第{c.line_start}-{c.line_end}行）{text}")
    return out


def trim_check(question: str) -> lang.ValueCheck | None:
    """What a trimmed text must keep: the clause with the value asked, or for a list question the
    one listing ("包括哪些": the clause naming the members, not the one naming the list)."""
    return lang.value_check(question) or lang.list_check(question)


class ExtractiveWriter:
    """Writes the answer from the cited sentences themselves (no generation)."""

    def __init__(self, data: IndexData, config: WriterConfig | None = None,
                 coverage: Callable[[Query, str], float] | None = None) -> None:
        self.data = data
        self.config = config or WriterConfig()
        self._coverage = coverage  # the reader's coverage(query, key), for trimming

    def write(self, query: Query, verdict: Verdict, groups: Groups, hits: Sequence[Hit],
              lead: str | None = None) -> Answer:
        """The answer from the cited groups; ``lead`` is :meth:`lead` of the first group ("" for
        none) when the caller has it already (the judge reads it too)."""
        if not verdict.answer or not groups:
            return abstain(query, verdict, hits)
        best = groups[0][1]
        budget = self.config.max_chars
        parts: list[str] = []
        citations = []
        if lead is None:
            lead = self.lead(query, group_text(groups[0]))
        if lead:
            parts.append(f"{lead}。")
            budget -= len(lead) + 1
        groups = groups[: max(1, budget // (self.config.min_piece + MARKER_ROOM))]
        # The best group first, right after the value it states (it used to follow reading
        # order, which could put a sentence about something else between the value and its source).
        texts = [self.data.documents[s[0].doc_id].text[s[0].start : s[-1].end] for s, _ in groups]
        shares = self._shares([len(t) for t in texts[: self.config.sharing]],
                              budget - MARKER_ROOM * min(len(texts), self.config.sharing))
        # Any further cited text only takes the room the first ones leave: trimmed to make room
        # for a third, the best sentence lost the value it states.
        left = budget - sum(shares) - MARKER_ROOM * len(shares)
        for text in texts[len(shares) :]:
            if left - MARKER_ROOM < self.config.min_piece:
                break
            shares.append(min(len(text), left - MARKER_ROOM))
            left -= shares[-1] + MARKER_ROOM
        groups, texts = groups[: len(shares)], texts[: len(shares)]
        check = trim_check(query.text)
        for n, ((span, item), text, share) in enumerate(zip(groups, texts, shares, strict=True), start=1):
            first, last = span[0], span[-1]
            parts.append(f"{self._trim(text, query, share, check)}[{n}]")
            citations.append(
                Citation(n, first.doc_id, first.title, text, first.start, last.end,
                         first.line_start, last.line_end, item.hit.chunk.chunk_id)
            )
        # The passages the answer cites lead the hits, the best one first: the reader
        # read every sentence of them, so its choice ranks better than retrieval alone.
        cited = list(dict.fromkeys([best.hit.chunk.chunk_id] + [item.hit.chunk.chunk_id for _, item in groups]))
        ordered = sorted(hits, key=lambda h: cited.index(h.chunk.chunk_id) if h.chunk.chunk_id in cited else len(cited))
        return Answer("".join(parts), False, tuple(citations), tuple(ordered), verdict.probability,
                      shown_question(query), lead=lead or "", rewritten=query.rewritten)

    def _shares(self, lengths: Sequence[int], budget: int) -> list[int]:
        """Characters each cited text may keep within ``budget``: the first (the best) what it
        needs, leaving each other at least ``other_chars`` (or its length); the others share
        the rest, the shortest first so that what one leaves goes to the next."""
        others = range(1, len(lengths))
        floor = sum(min(lengths[i], self.config.other_chars) for i in others)
        shares = list(lengths)
        shares[0] = min(lengths[0], max(budget - floor, budget // len(lengths)))
        left = budget - shares[0]
        for n, i in enumerate(sorted(others, key=lengths.__getitem__)):
            shares[i] = min(lengths[i], left // (len(others) - n))
            left -= shares[i]
        return shares

    # --- the lead value ---------------------------------------------------------------

    def _anchor(self, query: Query, text: str) -> int:
        """End of the last of the question's own words found in ``text`` (-1: none)."""
        anchor = -1
        low = text.lower()
        for word, subs, weight in query.terms:
            if weight < 1.0:
                continue  # words from earlier chat turns do not anchor
            for piece in (word, *subs):
                if len(piece) < 2:
                    continue  # a unit or particle ("秒", "前") says nothing about where the value is
                pos = low.find(piece)
                if pos >= 0:
                    anchor = max(anchor, pos + len(piece))
        return anchor

    def lead(self, query: Query, sentence: str) -> str | None:
        """The value or name the question asks for, taken from the cited sentence, or None.

        A number or date follows the last of the question's words in the sentence
        closely, in the same clause ("投资额5亿元" for "投资额是多少"). A name
        for 哪个/谁/什么 questions is a quoted name, or a name-like word (a corpus
        or proper-noun dictionary word) that the question does not contain, next
        to the question's words. Whatever it returns is a substring of ``sentence``.
        """
        question = query.text
        if lang.ASKS_DATE.search(question):
            pattern: re.Pattern[str] | None = lang.DATE_VALUE
        elif lang.ASKS_RATE.search(question):
            pattern = lang.RATE_VALUE  # a share is also a fraction ("1/3", "三分之一")
        elif lang.ASKS_NUMBER.search(question):
            pattern = lang.NUMBER_VALUE
        else:
            pattern = None
        if pattern is not None:
            # "多少家企业" is answered where a value counted in 家 stands right before 企业
            # ("1500余家企业", not "十大企业"), else by a value closely after the last of the
            # question's words.
            counted = lang.COUNTED_NOUN.search(question)
            m = next((v for v in pattern.finditer(sentence) if sentence.startswith(counted["noun"], v.end())
                      and v.group().endswith(counted["measure"])), None) if counted else None
            if m is None:
                anchor = self._anchor(query, sentence)
                m = pattern.search(sentence, anchor) if anchor >= 0 else None
                if m is None or m.start() - anchor > self.config.lead_gap or re.search(r"[，。；,;]", sentence[anchor : m.start()]):
                    m = None if counted else self._only_value(sentence, pattern, lang.value_check(question))
                    if m is None:
                        return None
            # "从75秒缩减至5秒" (or "从原来的8%直升40%") answers "缩短到几秒" with the value it changed to.
            to = lang.CHANGE_TO.match(sentence, m.end())
            if to and not lang.ASKS_FROM.search(question) and lang.CHANGE_FROM.search(sentence, 0, m.start()):
                second = pattern.match(sentence, to.end())
                if second:
                    m = second
            value = m.group().strip().removeprefix("达").removeprefix("共")
            # A value in another unit than the one asked ("多少吨" -> "800家") answers nothing.
            return None if lang.lacks_value(lang.value_check(question), value) else value
        if lang.ASKS_PERSON.search(question):
            # A deputy's name does not answer for the role asked (副总经理 for 总经理).
            return None if lang.deputy_only(question, sentence) else lang.person(sentence, question)
        if lang.ASKS_ENTITY.search(question):
            return self._lead_name(query, sentence)
        return None

    @staticmethod
    def _only_value(sentence: str, pattern: re.Pattern[str], check: lang.ValueCheck | None) -> re.Match[str] | None:
        """The value of the kind asked when the sentence gives one only, wherever it stands: a
        date often opens the sentence it dates, before the words the question asks with
        ("2019年10月，街道…设立…"), and a figure may come before what it measures. (Not for a
        count of a noun: "多少家企业" is not answered by "20家总部企业".)"""
        values = [v for v in pattern.finditer(sentence) if not lang.lacks_value(check, v.group())]
        return values[0] if len({v.group().strip() for v in values}) == 1 else None

    def _lead_name(self, query: Query, sentence: str) -> str | None:
        asked = match_key(query.text)
        quoted = [m.group()[1:-1] for m in lang.HAS_NAME.finditer(sentence)]
        quoted = [q for q in quoted if match_key(q) not in asked]
        if len(quoted) == 1:
            return quoted[0]
        # A name that shares a word with the question is the question's own subject
        # ("西湖新区打造", "数字产业" for a question about 西湖新区's 产业平台), not the answer;
        # an answer name ends like the name of an organisation or place.
        pieces = {p for w, subs, wt in query.terms if wt >= 1.0 for p in (w, *subs) if len(p) >= 2}
        low = sentence.lower()
        names = []
        tok = self.data.tokenizer
        for word, _subs in tok.terms(sentence):
            if len(word) < 3 or not lang.NAME_SUFFIX.search(word) or lang.NUMERIC.search(word):
                continue
            stem = lang.NAME_SUFFIX.sub("", word)
            # A name holds a name-like word ("科技有限公司", "产业平台" name nothing).
            if lang.GENERIC_STEM.search(stem) or not lang.mentions_name(stem, tok):
                continue
            if match_key(word) in asked or any(p in word for p in pieces):
                continue
            pos = low.find(word)
            if pos >= 0:
                names.append((pos, word))
        # A company's full name is several words to jieba. It is the question's own subject when
        # it holds one of the question's names (not a common word the question asks with: 公司).
        own = [p for p in pieces if lang.name_like(p, tok)]
        for m in lang.COMPANY_NAME.finditer(sentence) if lang.ASKS_COMPANY.search(query.text) else ():
            if match_key(m.group()) not in asked and not any(p in m.group().lower() for p in own):
                names.append((m.start(), m.group().lower()))
        spots = [m.start() for w, _s, wt in query.terms if wt >= 1.0 for m in re.finditer(re.escape(w), low)]
        # The question's words may stand in the sentence only in part ("半导体产业" as "半导体等产业").
        spots = spots or [m.start() for p in pieces for m in re.finditer(re.escape(p), low)]
        if not names or not spots:
            return None
        # The name closest to where the question's words stand in the sentence.
        pos, word = min(names, key=lambda n: min(abs(n[0] - s) for s in spots))
        if min(abs(pos - s) for s in spots) > 20:
            return None
        return sentence[pos : pos + len(word)]

    def _trim(self, text: str, query: Query, limit: int, check: lang.ValueCheck | None = None) -> str:
        """Shorten a long passage to its clauses that carry the question's words and, when the
        question asks for a value or a list (``check``: :func:`lang.value_check`,
        :func:`lang.list_check`), the value or the listing."""
        if len(text) <= limit:
            return text
        if limit < 3:  # no room for any of it (a tiny budget after a long lead)
            return "…"
        clauses = lang.CLAUSE.findall(text) or [text]
        score = self._coverage or (lambda _q, _k: 0.0)
        # The clause stating the kind of value asked for comes first (a date that opens the
        # sentence, a count at its end): without it the shortened text no longer answers.
        scores = [score(query, match_key(c)) + (check is not None and not lang.lacks_value(check, c))
                  for c in clauses]
        best = int(np.argmax(scores))
        lo = hi = best
        # Grow the window around the best clause while it fits.
        while True:
            grown = False
            for lo2, hi2 in ((lo, hi + 1), (lo - 1, hi)):
                if lo2 >= 0 and hi2 < len(clauses) and len("".join(clauses[lo2 : hi2 + 1])) <= limit - 2:
                    lo, hi = lo2, hi2
                    grown = True
                    break
            if not grown:
                break
        piece = "".join(clauses[lo : hi + 1])[: limit - 2]
        return ("…" if lo > 0 else "") + piece + ("…" if hi < len(clauses) - 1 else "")
