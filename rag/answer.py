"""Cited answer composition and abstention (offline, no LLM).

Owns: scoring the sentences of the retrieved passages against the question
(sentence vectors precomputed at build time, idf-weighted keyword coverage,
the passage's retrieval score), choosing the sentence(s) that answer, trimming
to a short answer with [n] markers, and the confidence that decides abstention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rag.config import Settings
from rag.index import IndexData
from rag.retrieval import Query
from rag.text import match_key, normalize_width
from rag.types import Answer, Citation, Hit, Sentence

NOT_FOUND = "资料中没有找到这个问题的答案。"

# What kind of fact a question asks for, from its interrogative word (generic grammar).
_ASKS_NUMBER = re.compile(r"多少|几[个家项年座所次位名倍成亿万千百十天秒分种条款台辆人%]|多大|多长|多高|多远|多久|比例|比重|百分之|占比|第几")
_ASKS_DATE = re.compile(r"何时|什么时候|哪一?年|哪一?天|哪个月|几月|几号|哪日|日期")
_ASKS_REASON = re.compile(r"为什么|为何|原因|何以|怎么会")
_ASKS_NAME = re.compile(r"叫什么|什么名|名称|称为什么|称作什么|简称")
_HAS_NAME = re.compile(r"“[^”]{2,20}”|《[^》]{2,30}》|「[^」]{2,20}」")
_NUMERALS = "0-9一二三四五六七八九十百千万亿两半"
_HAS_DATE = re.compile(r"\d{4}\s*年|\d{1,2}\s*月|\d{1,2}\s*日|今年|去年|明年|年底|年初|上半年|下半年|季度")
_HAS_REASON = re.compile(r"因为|由于|原因|为了|所以|因此|从而|得益于|导致|使得|以便")
# A sentence that opens with a pronoun needs the sentence before it to name its subject.
_ANAPHOR = re.compile(r"^[^，,。]{0,6}[，,]?[“\"]?(她|他|它|其[^他中次余实]|该[^地区市县]|这[里家位些]|那[里家位些]|此处)")
_UNITS = (
    "万亿元|亿美元|万美元|亿元|万元|元|平方公里|平方米|万平方米|立方米|公里|千米|米|亩|万人次|人次|万人|人|名|家|个|项|"
    "%|倍|天|小时|分钟|秒|吨|辆|台|套|所|座|栋|条|款|批|届|位|成"
)
_DATE_VALUE = re.compile(r"\d{4}年(?:\d{1,2}月)?(?:\d{1,2}日)?|\d{1,2}月\d{1,2}日|\d{1,2}月")
_NUMBER_VALUE = re.compile(
    rf"(?:约|近|超|超过|逾|达|共)?(?:\d+(?:\.\d+)?|[一二三四五六七八九十两百千万]+)(?:多|余)?(?:万亿|亿|万|千)?(?:{_UNITS})(?:以上|左右|多)?"
    r"|\d+(?:\.\d+)?%"
)
# Units of measure an answer must repeat ("多少平方公里" is not answered by "27家").
# Counting words (家, 个, 名, 人, 项 ...) are left out: answers swap them freely
# ("几个平台" / "五大平台"), so those questions only need some quantity.
_MEASURES = (
    "万亿元|亿美元|万美元|亿元|万元|美元|元|平方公里|平方千米|万平方米|平方米|立方米|公里|千米|米(?![面粮饭])|亩|吨|"
    "%|倍|成(?![员本果立为功交绩])|天(?![然津下数])|小时|分钟|秒"
)
_SAME_UNIT = {"公里": "公里|千米", "千米": "公里|千米", "平方公里": "平方公里|平方千米", "平方千米": "平方公里|平方千米",
              "成": "成|%"}
# The unit a 多少/几 question asks its number in; ordinals (第几) ask none. A Latin unit
# ("多少PFlops") stands alone: letters run into Chinese are a name ("多少AI企业").
_ASKED_UNIT = re.compile(
    r"(?<!第)(?:多少|几)\s*(?:万亿|亿|万|千|百)?\s*("
    + "|".join(sorted(_MEASURES.split("|"), key=len, reverse=True))
    + r"|[A-Za-z]+(?=[的左\s，。？！、,.?!)）]|$))"
)
# Years the question or answer names ("2021年度", "2023—2025年": every year of a range).
_YEARS = re.compile(r"(?<!\d)((?:19|20)\d{2})(?:\s*[-—–~至到]\s*((?:19|20)\d{2}))?(?=\s*年)")
# A development zone is named by what precedes its generic suffix ("某某经济技术开发区").
_ZONE = re.compile(r"(?:国家级)?(?:高新技术产业开发区|经济技术开发区|经济开发区|综合保税区|综保区|经开区|开发区|高新区)")
# Only a county is used among administrative suffixes: 市, 镇 and 乡 end too many common
# words (城市, 上市, 大都市, 各市, 鱼米之乡).
_COUNTY = "县"
_ORDINAL = re.compile(rf"第\s*[\d{_NUMERALS}]+")
_CLAUSE = re.compile(r"[^，,；;：:。！？!?]+[，,；;：:。！？!?]*")
_TERMINAL = tuple("。！？!?；;…”\"）)")


def value_check(question: str) -> tuple[re.Pattern[str], bool] | None:
    """What an answer must contain to state the kind of value the question asks for.

    A number in the unit of measure asked ("多少平方公里" needs "…平方公里"; 几成
    also takes a percentage), else a date (何时/哪一年), else an ordinal (第几),
    else a quantity that is not a date (多少/几). Returns the pattern and whether
    dates are removed before matching, or None when the question asks for no value.
    """
    asked = _ASKED_UNIT.search(question)
    if asked:
        unit = _SAME_UNIT.get(asked.group(1)) or re.escape(asked.group(1))
        return re.compile(rf"[\d{_NUMERALS}]\s*(?:多|余)?\s*(?:万亿|亿|万|千)?\s*(?:{unit})", re.IGNORECASE), False
    if _ASKS_DATE.search(question):
        return _HAS_DATE, False
    if "第几" in question:
        return _ORDINAL, False
    if _ASKS_NUMBER.search(question):
        return _NUMBER_VALUE, True
    return None


def lacks_value(check: tuple[re.Pattern[str], bool] | None, text: str) -> bool:
    """True when ``text`` does not state the value :func:`value_check` asks for."""
    if check is None:
        return False
    pattern, strip_dates = check
    return not pattern.search(_DATE_VALUE.sub("", text) if strip_dates else text)


@dataclass(frozen=True, slots=True)
class ScoredSentence:
    sentence: Sentence
    score: float
    coverage: float
    dense: float
    hit: Hit
    # Similarity to the question with its chat context (equals ``dense`` outside chats).
    context_dense: float


@dataclass(frozen=True, slots=True)
class Weights:
    """Sentence-score weights, tuned on the dev split (never on test)."""

    dense: float = 0.30
    cover: float = 0.40
    passage: float = 0.15
    heading: float = 0.10  # penalty: headings and captions state no fact
    type_miss: float = 0.08  # penalty: asks a number/date/reason the sentence lacks
    echo: float = 0.10  # penalty: the sentence only repeats the question
    idf_power: float = 2.0  # >1 lets rare words dominate coverage
    neighbour_share: float = 0.80  # a sentence near the best joins the answer above this share of its score
    context: float = 0.35  # share of coverage credited from the section title and previous sentence
    # Confidence penalty (abstention): the answer states no value of the kind asked for
    # (a number in the unit asked, any number, a date).
    value_miss: float = 0.3
    unknown_place: float = 1.0  # decisive: the sources never name the place asked about


def echo_pattern(query: Query) -> re.Pattern[str] | None:
    """One regex matching any of the question's words or sub-words, longest first."""
    pieces = sorted({p for word, subs, _ in query.terms for p in (word, *subs)}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, pieces))) if pieces else None


def novelty(text_key: str, pattern: re.Pattern[str] | None) -> float:
    """Share of a sentence's letters and digits not taken by the question's own words."""
    total = sum(c.isalnum() for c in text_key)
    if not total:
        return 0.0
    rest = pattern.sub("", text_key) if pattern is not None else text_key
    return sum(c.isalnum() for c in rest) / total


class AnswerComposer:
    """Builds an :class:`Answer` from the hits of one question."""

    def __init__(self, data: IndexData, settings: Settings, weights: Weights | None = None) -> None:
        self.data = data
        self.settings = settings
        self.weights = weights or Weights()
        self._sentence_keys = [match_key(s.text) for s in data.sentences]
        # What a sentence leaves implicit is often in its section title or the sentence before.
        self._context_keys = [
            match_key(s.title)
            + (self._sentence_keys[i - 1] if i and data.sentences[i - 1].doc_id == s.doc_id else "")
            + self._sentence_keys[i]
            for i, s in enumerate(data.sentences)
        ]
        self._corpus_key = "\n".join(match_key(d.text) for d in data.documents.values())
        data.tokenizer.place_like("")  # load jieba's proper-noun list now, not in the first request

    def coverage(self, query: Query, text_key: str) -> float:
        """Share of the question's words (idf- and turn-weighted) present in the text.

        A word counts in full when it occurs as a substring, else by the share
        of its sub-words that do (names are often shortened in the text).
        """
        kw = self.data.keyword
        total = found = 0.0
        for word, subs, weight in query.terms:
            w = kw.token_idf(word) ** self.weights.idf_power * weight
            total += w
            if word in text_key:
                found += w
            elif subs:
                found += w * sum(s in text_key for s in subs) / len(subs)
        return found / total if total else 0.0

    def score_sentences(
        self, query: Query, hits: list[Hit], question: str, value: tuple[re.Pattern[str], bool] | None = None
    ) -> list[ScoredSentence]:
        """Every sentence of the hits, best first. ``value`` is :func:`value_check` of the
        question when the caller has it already."""
        if not hits:
            return []
        w = self.weights
        top = hits[0].score or 1.0
        sents = self.data.sentences
        out: list[ScoredSentence] = []
        seen: set[int] = set()
        value = value if value is not None else value_check(question)
        asks_reason = bool(_ASKS_REASON.search(question))
        asks_name = bool(_ASKS_NAME.search(question))
        echo = echo_pattern(query)
        for hit in hits:
            ids = [i for i in hit.chunk.sent_ids if i not in seen]
            if not ids:
                continue
            seen.update(ids)
            vectors = self.data.sentence_vectors[ids]
            dense = vectors @ query.sentence_vector
            with_context = dense if query.focus_vector is None else vectors @ query.vector
            passage = hit.score / top
            for sid, d, dc in zip(ids, dense, with_context, strict=True):
                sent = sents[sid]
                key = self._sentence_keys[sid]
                cover = self.coverage(query, key)
                if w.context:
                    cover = (1 - w.context) * cover + w.context * self.coverage(query, self._context_keys[sid])
                score = w.dense * float(d) + w.cover * cover + w.passage * passage
                if not sent.text.endswith(_TERMINAL):
                    score -= w.heading
                if lacks_value(value, sent.text) or (asks_reason and not _HAS_REASON.search(sent.text)) or (
                    asks_name and not _HAS_NAME.search(sent.text)
                ):
                    score -= w.type_miss
                score -= w.echo * max(0.0, 0.3 - novelty(key, echo)) / 0.3
                out.append(ScoredSentence(sent, score, cover, float(d), hit, float(dc)))
        out.sort(key=lambda s: -s.score)
        return out

    @staticmethod
    def confidence(scored: list[ScoredSentence], used: set[int]) -> float:
        """How sure we are that the answer holds; compared with the abstain threshold.

        The best sentence's similarity to the question plus its lead over the
        best sentence left out of the answer: when the sources hold the answer
        the cited sentences stand out; when they do not, many half-matching
        sentences score alike. (Chosen on the dev split among score, coverage
        and missing-word features.)
        """
        best = scored[0]
        rest = next((s.score for s in scored if s.sentence.sent_id not in used), 0.0)
        # A terse follow-up ("任期多长？") is judged with the turn it leans on.
        return max(best.dense, best.context_dense) + best.score - rest

    def unknown_place(self, query: Query) -> str | None:
        """A county or development zone the question names that the sources never mention, if any.

        The name must be one of the question's own words and a place by jieba's
        dictionary (or a word it does not know) right before 县 or a zone suffix:
        "某某县", "某某经济技术开发区". Common words before a suffix (a verb before
        开发区, 贫困县, 各市县) name none.
        """
        tok = self.data.tokenizer
        words = [w for w, _, weight in query.terms if weight >= 1.0]
        text = normalize_width(query.text).lower()
        zones = [m.start() for m in _ZONE.finditer(text)]
        for word in words:
            if len(word) > 1 and word.endswith(_COUNTY) and tok.place_like(word):
                name = word[:-1]
            elif len(word) >= 2 and any(text.endswith(word, 0, start) for start in zones):
                name = word
            else:
                continue
            if len(name) >= 2 and tok.place_like(name) and match_key(name) not in self._corpus_key:
                return name
        return None

    @staticmethod
    def years(text: str) -> set[int]:
        out: set[int] = set()
        for first, last in _YEARS.findall(normalize_width(text)):
            lo = int(first)
            hi = int(last) if last and int(last) >= lo else lo
            out.update(range(lo, min(hi, lo + 20) + 1))
        return out

    @classmethod
    def year_conflict(cls, question: str, answer: str) -> bool:
        """The question names a year; the answer names others but not it."""
        asked, stated = cls.years(question), cls.years(answer)
        return bool(asked) and bool(stated) and not asked & stated

    def _trim(self, text: str, query: Query, limit: int) -> str:
        """Shorten a long passage to its clauses that carry the question's words."""
        if len(text) <= limit:
            return text
        clauses = _CLAUSE.findall(text) or [text]
        scores = [self.coverage(query, match_key(c)) for c in clauses]
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

    @staticmethod
    def lead_value(question: str, query: Query, sentence: str) -> str | None:
        """The number or date that answers a 多少/何时 question, when the sentence makes it clear.

        Taken as the first value after the last of the question's words found
        in the sentence ("投资额5亿元" for "投资额是多少"); None when no
        question word precedes a value, so the answer then opens with the sentence.
        """
        if _ASKS_DATE.search(question):
            pattern = _DATE_VALUE
        elif _ASKS_NUMBER.search(question):
            pattern = _NUMBER_VALUE
        else:
            return None
        text = sentence.lower()
        anchor = -1
        for word, subs, weight in query.terms:
            if weight < 1.0:
                continue  # words from earlier chat turns do not anchor
            for piece in (word, *subs):
                pos = text.find(piece)
                if pos >= 0:
                    anchor = max(anchor, pos + len(piece))
        if anchor < 0:
            return None
        m = pattern.search(sentence, anchor)
        # The value must follow its anchor closely, in the same clause.
        if m is None or m.start() - anchor > 12 or re.search(r"[，。；,;]", sentence[anchor : m.start()]):
            return None
        return m.group().strip().removeprefix("达").removeprefix("共")

    def _span(self, best: Sentence) -> list[Sentence]:
        """The best sentence, with the one before when it opens with a pronoun
        and the one after when it only introduces what follows (ends with a colon)."""
        sents = self.data.sentences
        span = [best]
        prev = sents[best.sent_id - 1] if best.sent_id > 0 else None
        if _ANAPHOR.match(best.text) and prev is not None and prev.doc_id == best.doc_id:
            span.insert(0, prev)
        nxt = sents[best.sent_id + 1] if best.sent_id + 1 < len(sents) else None
        if best.text.rstrip("”\"").endswith(("：", ":")) and nxt is not None and nxt.doc_id == best.doc_id:
            span.append(nxt)
        return span

    def compose(self, question: str, query: Query, hits: list[Hit]) -> Answer:
        """Answer from the hits, or abstain when confidence is under the threshold."""
        value = value_check(question)
        scored = self.score_sentences(query, hits, question, value)
        if not scored:
            return Answer(NOT_FOUND, True, (), tuple(hits), 0.0, question)
        best = scored[0]
        budget = self.settings.answer_max_chars
        groups = [(self._span(best.sentence), best)]
        used = {s.sent_id for s in groups[0][0]}
        for cand in scored[1 : self.settings.max_answer_sentences + 2]:
            if len(groups) >= self.settings.max_answer_sentences:
                break
            total = sum(s.end - s.start for g, _ in groups for s in g) + len(cand.sentence.text) + 8
            # A second sentence only when nearly as good (or a close neighbour of the
            # best: the fact often sits one sentence away from its subject), new,
            # and the answer stays short.
            near = cand.sentence.doc_id == best.sentence.doc_id and abs(cand.sentence.sent_id - best.sentence.sent_id) <= 2
            bar = self.weights.neighbour_share if near else 0.95
            if cand.score >= bar * best.score and total <= budget and cand.sentence.sent_id not in used:
                groups.append(([cand.sentence], cand))
                used.add(cand.sentence.sent_id)
        conf = self.confidence(scored, used)
        # When the sources lack the fact, the closest sentence usually talks about the
        # right subject but states no value of the kind asked for.
        best_text = "".join(s.text for s in groups[0][0])
        if lacks_value(value, best_text):
            conf -= self.weights.value_miss
        # The answer is about another year than the one asked.
        if self.year_conflict(question, best_text):
            conf -= self.weights.value_miss
        # The place asked about is nowhere in the sources: whatever matched is about another.
        if self.unknown_place(query) is not None:
            conf -= self.weights.unknown_place
        if conf < self.settings.abstain_threshold:
            return Answer(NOT_FOUND + " 以下是最接近的段落，供参考。", True, (), tuple(hits), conf, question)
        groups.sort(key=lambda g: (g[0][0].doc_id, g[0][0].start))
        parts, citations = [], []
        lead = self.lead_value(question, query, best.sentence.text)
        if lead:
            parts.append(f"{lead}。")
            budget -= len(lead) + 1
        share = budget // len(groups) - 4
        for n, (span, item) in enumerate(groups, start=1):
            first, last = span[0], span[-1]
            doc = self.data.documents[first.doc_id]
            text = doc.text[first.start : last.end]
            parts.append(f"{self._trim(text, query, share)}[{n}]")
            citations.append(
                Citation(n, first.doc_id, first.title, text, first.start, last.end,
                         first.line_start, last.line_end, item.hit.chunk.chunk_id)
            )
        # The passages the answer cites lead the hits, the best one first: the composer
        # read every sentence of them, so its choice ranks better than retrieval alone.
        cited = list(dict.fromkeys([best.hit.chunk.chunk_id] + [item.hit.chunk.chunk_id for _, item in groups]))
        ordered = sorted(hits, key=lambda h: cited.index(h.chunk.chunk_id) if h.chunk.chunk_id in cited else len(cited))
        return Answer("".join(parts), False, tuple(citations), tuple(ordered), conf, question)
