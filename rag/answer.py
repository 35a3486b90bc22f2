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
from rag.text import match_key
from rag.types import Answer, Citation, Hit, Sentence

NOT_FOUND = "资料中没有找到这个问题的答案。"

# What kind of fact a question asks for, from its interrogative word (generic grammar).
_ASKS_NUMBER = re.compile(r"多少|几[个家项年座所次位名倍成亿万千百十]|多大|多长|多高|多久|比例|比重|百分之|占比|增长了?多|规模")
_ASKS_DATE = re.compile(r"何时|什么时候|哪一?年|哪一?天|哪个月|几月|几号|哪日|日期|时间")
_HAS_NUMBER = re.compile(r"\d")
_HAS_DATE = re.compile(r"\d{4}\s*年|\d{1,2}\s*月|\d{1,2}\s*日|今年|去年|明年|年底|年初")
_CLAUSE = re.compile(r"[^，,；;：:。！？!?]+[，,；;：:。！？!?]*")


@dataclass(frozen=True, slots=True)
class ScoredSentence:
    sentence: Sentence
    score: float
    coverage: float
    dense: float
    hit: Hit


class AnswerComposer:
    """Builds an :class:`Answer` from the hits of one question."""

    # Weights of the sentence score; tuned on the dev split (see eval reports).
    W_DENSE = 0.45
    W_COVER = 0.40
    W_PASSAGE = 0.15

    def __init__(self, data: IndexData, settings: Settings) -> None:
        self.data = data
        self.settings = settings
        self._sentence_keys = [match_key(s.text) for s in data.sentences]
        self._chunk_keys = [match_key(c.text) for c in data.chunks]

    def coverage(self, query: Query, text_key: str) -> float:
        """Share of the question's words (idf- and turn-weighted) present in the text.

        A word counts in full when it occurs as a substring, else by the share
        of its sub-words that do (names are often shortened in the text).
        """
        kw = self.data.keyword
        total = found = 0.0
        for word, subs, weight in query.terms:
            w = kw.token_idf(word) * weight
            total += w
            if word in text_key:
                found += w
            elif subs:
                found += w * sum(s in text_key for s in subs) / len(subs)
        return found / total if total else 0.0

    def score_sentences(self, query: Query, hits: list[Hit], question: str) -> list[ScoredSentence]:
        if not hits:
            return []
        top = hits[0].score or 1.0
        sents = self.data.sentences
        out: list[ScoredSentence] = []
        seen: set[int] = set()
        asks_number = bool(_ASKS_NUMBER.search(question))
        asks_date = bool(_ASKS_DATE.search(question))
        for hit in hits:
            ids = [i for i in hit.chunk.sent_ids if i not in seen]
            if not ids:
                continue
            seen.update(ids)
            dense = self.data.sentence_vectors[ids] @ query.vector
            passage = hit.score / top
            for sid, d in zip(ids, dense, strict=True):
                sent = sents[sid]
                cover = self.coverage(query, self._sentence_keys[sid])
                score = self.W_DENSE * float(d) + self.W_COVER * cover + self.W_PASSAGE * passage
                # A heading or caption fragment states no fact.
                if len(sent.text) < 10:
                    score -= 0.15
                if asks_number and not _HAS_NUMBER.search(sent.text):
                    score -= 0.08
                if asks_date and not _HAS_DATE.search(sent.text):
                    score -= 0.08
                out.append(ScoredSentence(sent, score, cover, float(d), hit))
        out.sort(key=lambda s: -s.score)
        return out

    def confidence(self, best: ScoredSentence, hits: list[Hit], query: Query) -> float:
        """How sure we are that the best sentence answers; compared with the abstain threshold."""
        chunk_cover = self.coverage(query, self._chunk_keys[best.hit.chunk.chunk_id])
        return 0.5 * best.score + 0.25 * chunk_cover + 0.25 * best.dense

    def _trim(self, text: str, query: Query) -> str:
        """Shorten a long sentence to its clauses that carry the question's words."""
        limit = self.settings.answer_max_chars - 4
        if len(text) <= limit:
            return text
        clauses = _CLAUSE.findall(text) or [text]
        scores = [self.coverage(query, match_key(c)) for c in clauses]
        best = int(np.argmax(scores))
        lo = hi = best
        # Grow the window around the best clause while it fits.
        while True:
            grown = False
            for lo2, hi2 in ((lo - 1, hi), (lo, hi + 1)):
                if lo2 >= 0 and hi2 < len(clauses) and len("".join(clauses[lo2 : hi2 + 1])) <= limit:
                    lo, hi = lo2, hi2
                    grown = True
                    break
            if not grown:
                break
        piece = "".join(clauses[lo : hi + 1])[:limit]
        return ("…" if lo > 0 else "") + piece + ("…" if hi < len(clauses) - 1 else "")

    def compose(self, question: str, query: Query, hits: list[Hit]) -> Answer:
        """Answer from the hits, or abstain when confidence is under the threshold."""
        scored = self.score_sentences(query, hits, question)
        if not scored:
            return Answer(NOT_FOUND, True, (), tuple(hits), 0.0, question)
        best = scored[0]
        conf = self.confidence(best, hits, query)
        if conf < self.settings.abstain_threshold:
            return Answer(NOT_FOUND + " 以下是最接近的段落，供参考。", True, (), tuple(hits), conf, question)
        chosen = [best]
        budget = self.settings.answer_max_chars
        for cand in scored[1 : self.settings.max_answer_sentences + 2]:
            if len(chosen) >= self.settings.max_answer_sentences:
                break
            total = sum(len(c.sentence.text) for c in chosen) + len(cand.sentence.text) + 8
            # A second sentence only when nearly as good, new, and the answer stays short.
            if cand.score >= 0.95 * best.score and total <= budget and cand.sentence.text not in best.sentence.text:
                chosen.append(cand)
        chosen.sort(key=lambda c: (c.sentence.doc_id, c.sentence.start))
        parts, citations = [], []
        for n, item in enumerate(chosen, start=1):
            s = item.sentence
            body = self._trim(s.text, query) if len(chosen) == 1 else s.text
            parts.append(f"{body}[{n}]")
            citations.append(
                Citation(n, s.doc_id, s.title, s.text, s.start, s.end, s.line_start, s.line_end, item.hit.chunk.chunk_id)
            )
        return Answer("".join(parts), False, tuple(citations), tuple(hits), conf, question)
