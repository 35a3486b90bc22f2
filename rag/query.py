"""The query-building stage: from what the user typed (and the chat history) to a Query.

Owns question normalisation for retrieval, follow-up rewriting (a turn that
leans on the previous one becomes a standalone question naming the subject of
the previous answer), the weights of earlier turns, and encoding (through the
shared micro-batching encoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from rag import lang
from rag.aliases import Alias, mentions
from rag.normalize import NormalizedQuestion, normalize_question, retrieval_text
from rag.text import match_key, normalize_width
from rag.types import Query

if TYPE_CHECKING:
    from rag.text import Tokenizer

ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class QueryConfig:
    # Earlier turns steer retrieval, but the sentence that answers must match the
    # current question: their words count this much in sentence scoring.
    context_term_weight: float = 0.2
    previous_question_weight: float = 0.6
    previous_answer_weight: float = 0.3
    previous_answer_chars: int = 120
    place_verb_weight: float = 0.5  # 位于, for a question asking where something is
    alias_weight: float = 1.0  # the other form of a declared short name, in keyword retrieval
    max_subject_chars: int = 16  # a lead longer than this is a sentence, not a subject
    max_subjects: int = 4  # earlier subjects a follow-up may refer to
    given_term_weight: float = 0.5  # the subject a follow-up's rewrite put in, in sentence scoring
    max_question_chars: int = 1000  # the one limit on a question's length (RAG_MAX_QUESTION_CHARS)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A chat turn made standalone."""

    text: str  # the question as retrieval and scoring read it
    rewritten: bool = False  # ``text`` differs from what the user typed
    context: tuple[tuple[str, float], ...] = ()  # earlier text (with weights) that steers retrieval
    near: str = ""  # the previous answer, whose citations mark where the conversation is
    given: str = ""  # the subject taken from earlier turns, if any
    about: tuple[str, ...] = ()  # what the conversation so far is about, likeliest first


def _clean(text: str) -> str:
    return lang.MARKER.sub("", text).strip()


def _shared_end(name: str, rest: str) -> int:
    """How many of the first characters of ``rest`` end ``name`` ("研究园当初…" ends 斯坦福研究园: 3)."""
    return max((k for k in range(1, min(len(name), len(rest), 6) + 1) if name.endswith(rest[:k])), default=0)


def _kind_chars(name: str, rest: str, noun: str | None) -> int:
    """How many characters of ``rest`` (what follows a demonstrative) ``name`` stands for: the noun
    when the name is one ("临江高科园" a 园区, "文清小学" a 学校: names end in their kind), or the
    characters the name itself ends with ("缙云县" for 该县). 0 when it is not of that kind."""
    shared = _shared_end(name, rest)
    if noun and noun in lang.KIND_ENDINGS:
        return len(noun) if name.endswith(lang.KIND_ENDINGS[noun]) else 0
    # A longer noun must end like the name: in "该县总工会" the kind is 总工会, not 县.
    if noun and any(c in name[-2:] for c in noun) and (len(noun) <= 2 or noun[-1] in name[-2:]):
        return max(len(noun), shared)
    return shared if shared >= 2 or (shared and lang.NAME_SUFFIX.search(rest[:shared])) else 0


class QueryBuilder:
    """Builds the :class:`Query` for a question and its history."""

    def __init__(self, tokenizer: Tokenizer, encode_many: Callable[[Sequence[str]], list[np.ndarray]],
                 config: QueryConfig | None = None, aliases: Sequence[Alias] = (),
                 written: Callable[[str], bool] | None = None) -> None:
        self.tokenizer = tokenizer
        self.encode_many = encode_many
        self.config = config or QueryConfig()
        self.aliases = tuple(aliases)
        # Whether the articles write a text (as match_key); a name is grown only over words they
        # write together with it.
        self.written = written or (lambda text: False)

    # --- follow-ups -----------------------------------------------------------------

    def subjects(self, question: str, answer: str) -> list[str]:
        """What a follow-up to (question, answer) may refer to, likeliest first.

        The name an entity question was answered with (the answer's lead,
        "江东芯谷。…"), then the question's own subject (:meth:`topic`).
        """
        out: list[str] = []
        answer = _clean(answer)
        # Where something is ("设在哪里") is answered by a place, which later turns seldom ask about.
        if (lang.ASKS_ENTITY.search(question) and not lang.ASKS_WHERE.search(question)
                and not answer.startswith(lang.NON_ANSWERS)):
            lead = answer.split("。", 1)[0]
            # A name, not a clause: "一张床，可以拉出半边…" leads no follow-up.
            if (2 <= len(lead) <= self.config.max_subject_chars and len(lead) < len(answer)
                    and not lang.CLAUSE_BREAK.search(lead)):
                out.append(lead)
        topic = self.topic(question)
        if topic and topic not in out:
            out.append(topic)
        return out

    def mentions_name(self, text: str) -> bool:
        """Does ``text`` name something of its own: a corpus word, a proper noun or a word jieba
        does not know? A chat turn that names nothing ("涉及金额有多少？") asks about what the
        turns before it named."""
        return lang.mentions_name(text, self.tokenizer)

    def _name_like(self, word: str) -> bool:
        return lang.name_like(word, self.tokenizer)

    def topic(self, question: str) -> str | None:
        """The first name-like stretch of a question ("西湖科技园是…" -> 西湖科技园).

        The first name-like word (a corpus dictionary word, a proper noun or a word jieba
        does not know), grown over the words right after it that the articles write together with it ("贵州" + "电商云"), then over a zone or organisation suffix.
        A quoted name after 的 is the subject itself ("钱塘新区的“投资之家”" names 投资之家).
        """
        text = normalize_width(question).lower()
        spans = self._word_spans(question)
        source = question if len(question) == len(text) else text
        # A company's full name is the subject, whatever words jieba splits it into
        # ("某某电器制品（杭州）有限公司": jieba may take none of its words for a name).
        company = lang.COMPANY_NAME.search(source)
        for n, (start, word) in enumerate(spans):
            # The word a question word asks about ("在哪个城市举办") is the kind asked, not the subject.
            if not self._name_like(word) or lang.ASKED_KIND.search(text[:start]):
                continue
            if company and company.start() <= start:
                return company.group().strip()
            end = self._grow(text, spans[n + 1 :], start, start + len(word))
            # Not across 的 ("西湖科技园的核心区" is a part of the subject, not its name).
            m = re.match(lang.NAME_GROWTH, text[end:])
            if m:
                end += m.end()
            # A bracketed part belongs to the name ("某某高新区（东湖）", "中国（波兰）国际…").
            m = lang.NAME_BRACKET.match(text[end:])
            if m:
                end = self._grow(text, spans[n + 1 :], start, end + m.end(), after_suffix=True)
            quoted = lang.QUOTED_HEAD.match(text[end:])
            if quoted:
                return source[end + quoted.start(1) : end + quoted.end(1)]
            # A name inside quotation marks is the whole quoted name ("“云惠钱塘·嗨购全球”").
            opened = text.rfind("“", 0, start)
            if opened >= 0 and text.rfind("”", 0, start) < opened and (close := text.find("”", end)) > 0:
                return source[opened + 1 : close]
            # A place's own thing is the subject: "钱塘新区的格林达" asks about 格林达; a part of
            # the place ("江东芯谷的核心区块") is no subject of its own.
            if text[end : end + 1] == "的" and lang.PLACE_SUFFIX.search(text[start:end]):
                inner = self.topic(source[end + 1 :])
                if inner and text[end + 1 :].startswith(normalize_width(inner).lower()) and not lang.PLACE_PART.search(inner):
                    return inner
            return source[start:end]
        return company.group().strip() if company else None

    def _grow(self, text: str, spans: Sequence[tuple[int, str]], start: int, end: int,
              after_suffix: bool = False) -> int:
        """Where a name running over ``text[start:end]`` ends, grown over the words of ``spans``
        right after it that the articles write together with it."""
        for nxt, following in spans:
            if nxt < end:
                continue
            # Never across a gap: 的, the copula or a question word ("米奥会展是什么时候…"), nor
            # past a whole place or organisation name ("缙云县" + "首个…").
            if (nxt != end or (not after_suffix and lang.NAME_SUFFIX.search(text[start:end]))
                    or not self.written(match_key(text[start : nxt + len(following)]))):
                break
            end = nxt + len(following)
        return end

    def leans_on_history(self, question: str) -> bool:
        """Does a chat turn read as a follow-up: it points back, is very short, or names nothing?"""
        return lang.is_follow_up(question) or not self.mentions_name(question)

    def rewrite(self, turns: Sequence[Turn], force: bool = False) -> Rewrite:
        """The last user turn as a standalone question (see :class:`Rewrite`); ``force`` reads
        it as a follow-up even when it does not look like one."""
        return self._read(turns[-1].content.strip(), self._history(turns), force)

    def _history(self, turns: Sequence[Turn]) -> tuple[Rewrite, str, tuple[str, ...]] | None:
        """What the last turn may lean on: the previous question made standalone, its answer, and
        what the conversation is about, likeliest first; None for a first question."""
        users = [i for i, t in enumerate(turns[:-1]) if t.role == "user"]
        if not users:
            return None
        last = users[-1]
        earlier = self._history(turns[: last + 1])
        asked = turns[last].content.strip()
        previous = self._read(asked, earlier, force=False)
        answer = next((t.content for t in turns[last + 1 : -1] if t.role == "assistant"), "")
        if earlier is not None and not previous.rewritten and answer and not answer.startswith(lang.NON_ANSWERS):
            # A turn that named a word of its own may have been answered as a follow-up
            # (:meth:`readings`): "开年营收达到了多少？" names 开年 (a jieba word) yet may have
            # been answered about the company before. The answer tells which reading it took: the
            # one whose subject it names.
            forced = self._read(asked, earlier, force=True)
            own = self.topic(asked)
            if (forced.rewritten and forced.given and match_key(forced.given) in match_key(answer)
                    and not (own and match_key(own) in match_key(answer))):
                previous = forced
        # The previous turn's subjects, then those before it ("这个园区" two turns on may still
        # mean the park the chat began with).
        about = tuple(dict.fromkeys([*self.subjects(previous.text, answer), *previous.about]))[: self.config.max_subjects]
        return previous, answer, about

    def _read(self, question: str, history: tuple[Rewrite, str, tuple[str, ...]] | None, force: bool) -> Rewrite:
        """``question`` read against ``history`` (:meth:`_history`)."""
        if history is None:
            return Rewrite(question)
        previous, answer, about = history
        if not (force or self.leans_on_history(question)):
            return Rewrite(question, about=about)
        c = self.config
        context = [(previous.text, c.previous_question_weight)]
        if answer:
            context.append((_clean(answer)[: c.previous_answer_chars], c.previous_answer_weight))
        text, given = self._substitute(question, previous.text, about)
        near = "" if answer.startswith(lang.NON_ANSWERS) else answer
        about = tuple(dict.fromkeys([given, *about]))[: c.max_subjects] if given else about
        return Rewrite(text, text != question, tuple(context), near, given, about)

    def _substitute(self, question: str, previous: str, subjects: Sequence[str]) -> tuple[str, str]:
        """Put the subject where the follow-up points at it: the question, and the subject it
        was given ("" when none, or when an ellipsis took the previous question whole)."""
        m = lang.PRONOUN.search(question)
        if m and re.fullmatch(lang.ONE_PERSON_, m.group()):
            # "他"/"她" stand for a person: with no person among the subjects, the pronoun stays
            # and the subject goes in front ("…马拉松她跑完全程…" still finds the sentence on
            # the runner's time).
            people = [s for s in subjects if lang.NAME_LINE.match(s)]
            subjects, m = (people, m) if people else (subjects, None)
        if subjects and m:
            rest, word = question[m.end():], m.group()
            if word in lang.GROUP_PRONOUNS:
                # "他们" is the company or the team the previous question was about, not the
                # place or person it was answered with.
                subjects = [*subjects[1:], subjects[0]]
            subject = subjects[0]
            # "它的" -> "江东芯谷的"; "其" before a noun -> "江东芯谷的".
            joint = "的" if word.startswith("其") or word.endswith("的") else ""
            demonstrative = lang.DEMONSTRATIVE.match(question, m.start())
            if demonstrative and demonstrative.end() == m.end():
                # "这个园区" stands for the earlier name of that kind (临江高科园), and the name
                # then says the kind itself ("这个研究园" -> "斯坦福研究园", not "斯坦福研究园园").
                noun = self._noun_after(rest)
                # Only a word of the dictionary is a kind of thing: "该县有…" may glue 县有.
                noun = noun if noun and not self.tokenizer.place_like(noun) else None
                same = [(s, n) for s in subjects if (n := _kind_chars(s, rest, noun))]
                if same:
                    subject, rest = same[0][0], rest[same[0][1]:]
            return question[: m.start()] + subject + joint + rest, subject
        piece = lang.ELLIPSIS_EDGES.sub("", question).strip()
        if question.rstrip("？?。 ").endswith("呢") and piece:
            swapped = self._swap(previous, piece)
            if swapped:
                return swapped, ""
            return f"{piece}，{previous}" if len(piece) <= 8 else question, ""
        opened = lang.OPENING.match(question)
        rest = question[opened.end() :] if opened else ""
        if rest and (own := self.topic(rest)) and rest.startswith(own):
            # "那大创小镇重点发展什么？" names its own subject: 那 only moves the talk on to it.
            return rest, ""
        # The likeliest subject the turn does not name itself ("占全区规上工业总产值的比重…" after
        # a turn about a zone's 规上工业总产值 names the figure, not the zone).
        subject = next((s for s in subjects if match_key(s) not in match_key(question)), "")
        if subject:
            return f"{subject}{question}", subject
        return question, ""

    def _swap(self, previous: str, piece: str) -> str | None:
        """The previous question about ``piece`` instead ("市级的呢？" after "省级园区有几个？"),
        or None when nothing in it is of the same kind."""
        # A quoted name takes the place of the previous question's ("那“休眠”监管呢？" after
        # "“观察”监管针对…"): quotation marks set apart the one thing that changes.
        mine, theirs = lang.QUOTED.findall(piece), list(lang.QUOTED.finditer(previous))
        if len(mine) == 1 and len(theirs) == 1 and mine[0] != theirs[0].group(1):
            return previous[: theirs[0].start(1)] + mine[0] + previous[theirs[0].end(1) :]
        spans = self._word_spans(previous)
        for n, (start, word) in enumerate(spans):
            # The word of the same kind ends alike; a longer piece brings its own modifier,
            # which takes the place of the word's ("四工段横河" for "四号桥直河").
            if word != piece and len(word) >= 2 and word[-1] == piece[-1]:
                if len(piece) > len(word) and n and spans[n - 1][0] + len(spans[n - 1][1]) == start:
                    start = spans[n - 1][0]
                return previous[:start] + piece + previous[spans[n][0] + len(word):]
        for n, (start, word) in enumerate(spans):
            # Or it begins alike ("省级以上众创空间" for "省级以上孵化器").
            if len(word) >= 2 and piece.startswith(word) and piece != word and n + 1 < len(spans):
                end = spans[n + 1][0] + len(spans[n + 1][1])
                return previous[:start] + piece + previous[end:]
        owner, _, attribute = piece.rpartition("的")
        if owner and len(attribute) >= 2 and (asked := lang.QUESTION_WORD.search(previous)):
            # "那大创小镇的规划面积呢？" names its own subject and attribute. The attribute asked
            # before gets the new subject ("江东芯谷的核心区块呢？" after "医药港的核心区块面积
            # 是多少？"); another attribute is asked the way the previous question asked ("…有多大？").
            at = previous.find(attribute)
            if 0 <= at < asked.start():
                return f"{owner}的{previous[at:]}"
            start = asked.start() - (previous[asked.start() - 1 : asked.start()] in "是有为约达")
            return piece + previous[start:]
        if self._names_one(piece):
            # "那大华呢？" after "…海康威视负责什么？": the name takes the place of the last name.
            # (Not an attribute with a word jieba does not know: "规上工业总产值呢？" asks the
            # same subject for another figure.)
            names = [n for n, (_, word) in enumerate(spans) if self._name_like(word)]
            if names:
                # The whole name, when it runs over several words ("海康" + "威视").
                first = last = names[-1]
                while first - 1 in names and spans[first - 1][0] + len(spans[first - 1][1]) == spans[first][0]:
                    first -= 1
                end = spans[last][0] + len(spans[last][1])
                return previous[: spans[first][0]] + piece + previous[end:]
        return None

    def _names_one(self, piece: str) -> bool:
        """Is ``piece`` as a whole a name: a corpus or proper-noun word, or it ends like one?"""
        return (self.tokenizer.is_name(piece) or bool(lang.NAME_SUFFIX.search(piece))
                or lang.COMPANY_NAME.fullmatch(piece) is not None)

    def _word_spans(self, text: str) -> list[tuple[int, str]]:
        """The whole words of ``text`` (as :meth:`Tokenizer.terms`) with where each starts."""
        spans, at = [], 0
        key = normalize_width(text).lower()
        for word, _ in self.tokenizer.terms(text):
            start = key.find(word, at)
            if start >= 0:
                spans.append((start, text[start:start + len(word)]))
                at = start + len(word)
        return spans

    def _noun_after(self, rest: str) -> str | None:
        """The noun right after a demonstrative ("这家企业的…" -> 企业), if a word of 2+ characters."""
        spans = self._word_spans(rest)
        if spans and spans[0][0] == 0 and len(spans[0][1]) >= 2 and lang.CJK_CHAR.match(spans[0][1]):
            return spans[0][1]
        return None

    # --- building ---------------------------------------------------------------------

    def build(self, text: str, context: Sequence[tuple[str, float]] = (), asked: str = "",
              rewritten: bool = False, near: str = "", given: str = "") -> Query:
        tok = self.tokenizer
        # The subject a rewrite put in: the sentence that answers often names it only in the
        # sentence before ("我们正式入驻…"), so in scoring it counts less than the words asked.
        given_words = {w for w, _ in tok.terms(given)} - {w for w, _ in tok.terms(asked or text)} if given else set()
        tokens: list[str] = []
        weights: list[float] = []
        terms: dict[str, tuple[str, tuple[str, ...], float]] = {}
        aliases = mentions(text, self.aliases)
        for alias in aliases:
            # The form the question does not use finds the passages written with it.
            for t in tok.tokenize(alias.other):
                tokens.append(t)
                weights.append(self.config.alias_weight)
        if lang.asks_place(text, tok.names_something) and lang.PLACE_VERB not in text:
            # "X在哪里" is answered by a sentence saying where X 位于.
            tokens.append(lang.PLACE_VERB)
            weights.append(self.config.place_verb_weight)
            terms[lang.PLACE_VERB] = (lang.PLACE_VERB, (), self.config.place_verb_weight)
        for n, (piece, weight) in enumerate([(text, 1.0), *context]):
            for t in tok.tokenize(piece):
                tokens.append(t)
                weights.append(weight)
            if n and rewritten:
                # A rewritten follow-up names its subject: the earlier turns steer keyword
                # retrieval only, and its sentence must answer the question as rewritten.
                continue
            for word, subs in tok.terms(piece):
                if word not in terms:
                    own = self.config.given_term_weight if word in given_words else 1.0
                    terms[word] = (word, subs, own if n == 0 else self.config.context_term_weight * weight)
        if context and not rewritten:
            # Follow-ups without a subject to name retrieve with the earlier question they
            # lean on; sentences are scored against the current question alone.
            combined, focus = self.encode_many([f"{context[0][0]} {text}", text])
        else:
            combined = focus = self.encode_many([text + "".join(f"（{a.other}）" for a in aliases)])[0]
        return Query(text, tuple(tokens), tuple(weights), combined, tuple(terms.values()), focus,
                     asked or text, rewritten, near, tuple(sorted(given_words & terms.keys())), aliases)

    def from_text(self, raw: str) -> Query:
        """The Query for text typed on its own (a search).

        Raises:
            QuestionRejected: empty once normalised, or over the length limit.
        """
        typed = normalize_question(raw, self.config.max_question_chars)
        return self.build(typed.text, asked=typed.display)

    def from_turns(self, turns: Sequence[Turn]) -> Query:
        """The Query for the last user turn of a chat, normalised (invisible characters and
        emoji out, traditional to simplified) and, for a follow-up, rewritten.

        Raises:
            ValueError: no turns, an unknown role, or the last turn is not the user's.
            QuestionRejected: the last turn is empty once normalised, or over the length limit.
        """
        typed, normalised = self._normalise(turns)
        return self._query(typed, self.rewrite(normalised))

    def readings(self, turns: Sequence[Turn]) -> list[Query]:
        """The ways to read the last turn: as :meth:`from_turns`, and, when it does not look like
        a follow-up but has history, also as one ("去年营收达到了多少？" names a word of its own
        yet asks about the company before); a short turn asking how it was before ("原来需要多
        久？") also as the previous question asked again. The judge's probability chooses.

        Raises: as :meth:`from_turns`.
        """
        typed, normalised = self._normalise(turns)
        question, history = normalised[-1].content.strip(), self._history(normalised)
        first = self._read(question, history, force=False)
        readings = [first]
        if history is not None and not first.rewritten:
            other = self._read(question, history, force=True)
            if other.rewritten:
                readings.append(other)
        elif history is not None and first.given and (piece := self._asked_again(question)):
            # A short turn that names nothing may ask the previous question again of another
            # time or part ("原来需要多久？" after "…压缩到了多久？"): read as that question too.
            readings.append(replace(first, text=f"{piece}，{history[0].text}", given=""))
        return [self._query(typed, r) for r in readings]

    def _asked_again(self, question: str) -> str:
        """What a short turn that names nothing and asks how it was before (原来, 之前, 以前)
        asks, without its edges; "" for any other turn."""
        piece = lang.ELLIPSIS_EDGES.sub("", question).strip()
        asks = (len(piece) <= 8 and bool(lang.ASKS_FROM.search(piece)) and not self.mentions_name(piece)
                and not lang.PRONOUN.search(question))
        return piece if asks else ""

    def _normalise(self, turns: Sequence[Turn]) -> tuple[NormalizedQuestion, list[Turn]]:
        if not turns:
            raise ValueError("messages must hold at least one turn")
        for t in turns:
            if t.role not in ROLES:
                raise ValueError(f"Unknown role '{t.role}'. Choose one of {list(ROLES)}")
        if turns[-1].role != "user":
            raise ValueError("the last message must be a user turn")
        typed = normalize_question(turns[-1].content, self.config.max_question_chars)
        # Earlier turns are read in their retrieval form too; they are never rejected.
        return typed, [*(Turn(t.role, retrieval_text(t.content)) for t in turns[:-1]), Turn("user", typed.text)]

    def _query(self, typed: NormalizedQuestion, r: Rewrite) -> Query:
        return self.build(r.text, r.context, asked=typed.display, rewritten=r.rewritten, near=r.near, given=r.given)
