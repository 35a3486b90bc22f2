"""The query-building stage: from what the user typed (and the chat history) to a Query.

Owns question normalisation for retrieval, follow-up rewriting (a turn that
leans on the previous one becomes a standalone question naming the subject of
the previous answer), the weights of earlier turns, and encoding (through the
shared micro-batching encoder).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rag import lang
from rag.aliases import Alias, mentions
from rag.normalize import normalize_question, retrieval_text
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
    max_question_chars: int = 1000  # the one limit on a question's length (RAG_MAX_QUESTION_CHARS)


def _clean(text: str) -> str:
    return lang.MARKER.sub("", text).strip()


class QueryBuilder:
    """Builds the :class:`Query` for a question and its history."""

    def __init__(self, tokenizer: Tokenizer, encode_many: Callable[[Sequence[str]], list[np.ndarray]],
                 config: QueryConfig | None = None, aliases: Sequence[Alias] = ()) -> None:
        self.tokenizer = tokenizer
        self.encode_many = encode_many
        self.config = config or QueryConfig()
        self.aliases = tuple(aliases)

    # --- follow-ups -----------------------------------------------------------------

    def subject(self, question: str, answer: str) -> str | None:
        """What a follow-up to (question, answer) refers to.

        The name an entity question was answered with (the answer's lead,
        "江东芯谷。…"), else the question's own subject: its first name-like word
        (a corpus dictionary word or proper noun), grown over adjoining name-like words.
        """
        answer = _clean(answer)
        if lang.ASKS_ENTITY.search(question) and not answer.startswith(lang.NOT_FOUND):
            lead = answer.split("。", 1)[0]
            if 2 <= len(lead) <= self.config.max_subject_chars and len(lead) < len(answer):
                return lead
        return self.topic(question)

    def topic(self, question: str) -> str | None:
        """The first name-like stretch of a question ("西湖科技园是…" -> 西湖科技园)."""
        tok = self.tokenizer
        text = normalize_width(question).lower()
        words = [w for w, _ in tok.terms(text)]
        for word in words:
            if len(word) < 2 or lang.NUMERIC.search(word) or lang.PRONOUN.search(word):
                continue
            if tok.is_name(word):
                start = text.find(word)
                if start < 0:
                    continue
                # Grow over a zone or organisation suffix right after the name.
                end = start + len(word)
                # Not across 的 ("西湖科技园的核心区" is a part of the subject, not its name), nor
                # across the copula or a question word: "米奥会展是什么时候在创业板上市的" names 米奥会展.
                m = re.match(lang.NAME_GROWTH, text[end:])
                if m:
                    end += m.end()
                return question[start:end] if len(question) == len(text) else text[start:end]
        return None

    def rewrite(self, turns: Sequence[Turn]) -> tuple[str, bool, list[tuple[str, float]], str]:
        """The last user turn as a standalone question, whether it was rewritten, the
        earlier text (with weights) that steers retrieval for a follow-up, and the
        previous answer a follow-up leans on."""
        question = turns[-1].content.strip()
        if not lang.is_follow_up(question):
            return question, False, [], ""
        users = [i for i, t in enumerate(turns[:-1]) if t.role == "user"]
        if not users:
            return question, False, [], ""
        last = users[-1]
        # The previous question, itself made standalone first.
        previous, _, _, _ = self.rewrite(turns[: last + 1])
        answer = next((t.content for t in turns[last + 1 : -1] if t.role == "assistant"), "")
        c = self.config
        context = [(previous, c.previous_question_weight)]
        if answer:
            context.append((_clean(answer)[: c.previous_answer_chars], c.previous_answer_weight))
        subject = self.subject(previous, answer)
        rewritten = self._substitute(question, previous, subject)
        near = "" if answer.startswith(lang.NOT_FOUND) else answer
        return rewritten, rewritten != question, context, near

    def _substitute(self, question: str, previous: str, subject: str | None) -> str:
        """Put the subject where the follow-up points at it."""
        m = lang.PRONOUN.search(question)
        if subject and m:
            rest = question[m.end():]
            # "它的" -> "江东芯谷的"; "其" before a noun -> "江东芯谷的".
            joint = "的" if m.group().startswith("其") else ""
            word = m.group()
            if word.endswith("的"):
                joint, word = "的", word[:-1]
            return question[: m.start()] + subject + joint + rest
        piece = lang.ELLIPSIS_EDGES.sub("", question).strip()
        if question.rstrip("？?。 ").endswith("呢") and piece:
            # "市级的呢？" after "省级园区有几个？": the word of the same kind is swapped.
            for word, _ in self.tokenizer.terms(previous):
                if word != piece and len(word) >= 2 and word[-1] == piece[-1] and word in previous:
                    return previous.replace(word, piece, 1)
            return f"{piece}，{previous}" if len(piece) <= 8 else question
        if subject and match_key(subject) not in match_key(question):
            return f"{subject}{question}"
        return question

    # --- building ---------------------------------------------------------------------

    def build(self, text: str, context: Sequence[tuple[str, float]] = (), asked: str = "",
              rewritten: bool = False, near: str = "") -> Query:
        tok = self.tokenizer
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
                    terms[word] = (word, subs, 1.0 if n == 0 else self.config.context_term_weight * weight)
        if context and not rewritten:
            # Follow-ups without a subject to name retrieve with the earlier question they
            # lean on; sentences are scored against the current question alone.
            combined, focus = self.encode_many([f"{context[0][0]} {text}", text])
        else:
            combined = focus = self.encode_many([text + "".join(f"（{a.other}）" for a in aliases)])[0]
        return Query(text, tuple(tokens), tuple(weights), combined, tuple(terms.values()), focus,
                     asked or text, rewritten, near, aliases)

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
        if not turns:
            raise ValueError("messages must hold at least one turn")
        for t in turns:
            if t.role not in ROLES:
                raise ValueError(f"Unknown role '{t.role}'. Choose one of {list(ROLES)}")
        if turns[-1].role != "user":
            raise ValueError("the last message must be a user turn")
        typed = normalize_question(turns[-1].content, self.config.max_question_chars)
        # Earlier turns are read in their retrieval form too; they are never rejected.
        normalised = [*(Turn(t.role, retrieval_text(t.content)) for t in turns[:-1]), Turn("user", typed.text)]
        text, rewritten, context, near = self.rewrite(normalised)
        return self.build(text, context, asked=typed.display, rewritten=rewritten, near=near)
