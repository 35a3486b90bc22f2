"""Optional answer writing by an OpenAI-compatible LLM over the retrieved passages.

Owns: the prompt (numbered passages, the question, the citation and not-found
rules), the one ``POST {RAG_LLM_BASE_URL}/chat/completions`` call, and turning
the reply into an :class:`~rag.types.Answer`: markers to passages that were not
given are dropped, the rest are renumbered 1..m in order of first appearance and
become citations of the whole passage. Any failure (timeout, connection error,
non-2xx status, malformed reply, a reply without a valid marker, a not-found
reply: abstaining is the judge's decision, not the writer's) returns the
extractive answer with a ``note`` saying why; this module never raises from
:meth:`LlmGenerator.generate` and never logs the API key.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx

from rag.config import Settings
from rag.lang import NOT_FOUND
from rag.types import Answer, Citation, Hit

log = logging.getLogger("rag.llm")

ANSWER_MAX_CHARS = 150

SYSTEM_PROMPT = "你是一个严谨的问答助手，只根据用户给出的资料段落回答问题，不使用资料以外的知识。"

USER_PROMPT = """资料段落：
{passages}

问题：{question}

要求：
1. 只根据上面的资料段落，用中文简短回答，不超过{max_chars}个字。
2. 每一句陈述之后用方括号标出依据的段落编号，例如 [1] 或 [2][3]；只能引用上面给出的编号。
3. 如果资料段落中没有这个问题的答案，只回复这一句：{not_found}
4. 不要复述问题，不要列出来源清单。"""

# [3], [1, 2], [1，2], 【3】: one group of passage numbers; normalised to [a][b] before renumbering.
_MARKER_GROUP = re.compile(r"[\[【]\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*[\]】]")
_MARKER = re.compile(r"\[(\d+)\]")
_REPEATED = re.compile(r"(\[\d+\])(?:\s*\1)+")
_NOISE = re.compile(r"[\s\[\]【】\d。．.！!]")


class LlmError(Exception):
    """Why a call to the LLM gave no usable reply (a short reason for the note)."""


class LlmGenerator:
    """Writes a cited answer with an OpenAI-compatible chat model; the extractive answer is the fallback.

    Construction is light: the HTTP client is made on the first call.
    """

    def __init__(self, settings: Settings) -> None:
        """Keep the settings; nothing is contacted here.

        Args:
            settings: needs ``llm_base_url``; ``llm_model``, ``llm_api_key`` and
                ``llm_timeout`` are used when set.
        """
        self.settings = settings
        self.url = (settings.llm_base_url or "").rstrip("/") + "/chat/completions"
        self.model = settings.llm_model
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # --- public -------------------------------------------------------------

    def generate(self, question: str, hits: list[Hit], fallback: Answer) -> Answer:
        """Answer ``question`` from ``hits`` with the LLM, or return ``fallback`` with a note.

        Args:
            question: the question as asked (follow-ups already carry their context in ``hits``).
            hits: the passages to give the model, best first; they become [1]..[n].
            fallback: the extractive answer, returned (with ``note`` set) whenever the LLM fails.

        Returns:
            The LLM's answer with renumbered markers and passage citations; an
            abstaining answer when the model replies with the not-found sentence;
            otherwise ``fallback`` with a note that says why it was used.
        """
        if not hits:
            return replace(fallback, note="no passages retrieved, LLM not asked; extractive answer shown")
        try:
            reply = self._complete(self.messages(question, hits))
        except LlmError as exc:
            log.warning("LLM unavailable (%s); using the extractive answer", exc)
            return replace(fallback, note=f"LLM unavailable ({exc}); extractive answer shown")
        except Exception as exc:  # never let the optional writer break an answer
            log.warning("LLM call failed (%s); using the extractive answer", type(exc).__name__)
            return replace(fallback, note=f"LLM unavailable ({type(exc).__name__}); extractive answer shown")
        return self.to_answer(reply, hits, fallback)

    def stream(self, question: str, hits: list[Hit], fallback: Answer) -> Iterator[str | Answer]:
        """Like :meth:`generate`, with the reply's text yielded piece by piece as the LLM writes
        it, then the final :class:`Answer` (``fallback`` with a note when the call fails)."""
        if not hits:
            yield self.generate(question, hits, fallback)
            return
        parts: list[str] = []
        try:
            for piece in self._stream_complete(self.messages(question, hits)):
                parts.append(piece)
                yield piece
        except LlmError as exc:
            log.warning("LLM unavailable (%s); using the extractive answer", exc)
            yield replace(fallback, note=f"LLM unavailable ({exc}); extractive answer shown")
            return
        except Exception as exc:  # never let the optional writer break an answer
            log.warning("LLM call failed (%s); using the extractive answer", type(exc).__name__)
            yield replace(fallback, note=f"LLM unavailable ({type(exc).__name__}); extractive answer shown")
            return
        if not "".join(parts).strip():
            yield replace(fallback, note="LLM unavailable (empty reply); extractive answer shown")
            return
        yield self.to_answer("".join(parts), hits, fallback)

    def messages(self, question: str, hits: list[Hit]) -> list[dict[str, str]]:
        """The chat messages sent to the model: numbered passages, the question, the rules."""
        passages = "\n\n".join(
            f"[{n}] 《{h.chunk.title}》\n{h.chunk.text.strip()}" for n, h in enumerate(hits, start=1)
        )
        user = USER_PROMPT.format(
            passages=passages, question=question.strip(), max_chars=ANSWER_MAX_CHARS, not_found=NOT_FOUND
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def to_answer(self, reply: str, hits: list[Hit], fallback: Answer) -> Answer:
        """Turn the model's reply into an :class:`Answer` over ``hits``.

        Args:
            reply: the assistant message content.
            hits: the passages that were numbered [1]..[n] in the prompt.
            fallback: used for hits, confidence and question, and returned when
                the reply cites no given passage.
        """
        label = f"LLM {self.model}" if self.model else "LLM"
        text = reply.strip()
        if is_not_found(text):
            # Abstention is the judge's decision alone: it chose to answer, so the cited
            # extractive answer stands and the note says the LLM found nothing.
            return replace(fallback, note=f"{label} found no answer in the passages; extractive answer shown")
        text, order, dropped = renumber(text, len(hits))
        if not order:
            why = "its reply cited no given passage" if not dropped else f"its reply cited only passages not given {dropped}"
            return replace(fallback, note=f"{label} answer not used: {why}; extractive answer shown")
        citations = tuple(_citation(new, hits[old - 1]) for new, old in enumerate(order, start=1))
        note = f"generated by {label}"
        if dropped:
            note += f"; dropped markers to passages not given: {dropped}"
        return replace(fallback, text=text, abstained=False, citations=citations, note=note)

    # --- HTTP ---------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=httpx.Timeout(self.settings.llm_timeout))
        return self._client

    def _complete(self, messages: list[dict[str, str]]) -> str:
        """POST the chat completion and return the reply text.

        Raises:
            LlmError: timeout, connection error, non-2xx status or a malformed body.
        """
        body, headers = self._request(messages, stream=False)
        try:
            resp = self._http().post(self.url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise LlmError("timeout") from exc
        except httpx.HTTPError as exc:
            raise LlmError(f"connection error: {type(exc).__name__}") from exc
        if not resp.is_success:
            raise LlmError(f"HTTP {resp.status_code}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LlmError("malformed response") from exc
        if not isinstance(content, str) or not content.strip():
            raise LlmError("empty or malformed reply")
        return content

    def _request(self, messages: list[dict[str, str]], stream: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body and headers of a chat completion request."""
        body: dict[str, Any] = {"messages": messages, "temperature": 0, "stream": stream}
        if self.model:
            body["model"] = self.model
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self.settings.llm_api_key is not None:
            headers["Authorization"] = f"Bearer {self.settings.llm_api_key.get_secret_value()}"
        return body, headers

    def _stream_complete(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """POST the chat completion with ``stream: true``; yield the content pieces.

        Raises:
            LlmError: timeout, connection error, non-2xx status or a malformed event.
        """
        body, headers = self._request(messages, stream=True)
        try:
            with self._http().stream("POST", self.url, json=body, headers=headers) as resp:
                if not resp.is_success:
                    raise LlmError(f"HTTP {resp.status_code}")
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        choices = json.loads(data).get("choices") or []
                        piece = choices[0].get("delta", {}).get("content") if choices else None
                    except (ValueError, AttributeError, IndexError, TypeError) as exc:
                        raise LlmError("malformed stream event") from exc
                    if piece:
                        yield piece
        except httpx.TimeoutException as exc:
            raise LlmError("timeout") from exc
        except httpx.HTTPError as exc:
            raise LlmError(f"connection error: {type(exc).__name__}") from exc


def is_not_found(text: str) -> bool:
    """Is the reply the fixed not-found sentence (ignoring spaces, markers and end punctuation)?"""
    key = _NOISE.sub("", NOT_FOUND)
    return _NOISE.sub("", text).startswith(key)


def renumber(text: str, n: int) -> tuple[str, list[int], list[int]]:
    """Drop markers outside 1..n and renumber the rest in order of first appearance.

    Args:
        text: reply text with [k] markers (also [a, b] and 【k】, normalised to [a][b]).
        n: how many passages were given.

    Returns:
        The new text, the old passage numbers in their new order (new number i
        is ``order[i-1]``), and the sorted distinct old numbers that were dropped.
    """
    text = _MARKER_GROUP.sub(lambda m: "".join(f"[{int(k)}]" for k in re.split(r"\s*[,，、]\s*", m.group(1))), text)
    order: list[int] = []
    dropped: set[int] = set()

    def swap(m: re.Match[str]) -> str:
        k = int(m.group(1))
        if not 1 <= k <= n:
            dropped.add(k)
            return ""
        if k not in order:
            order.append(k)
        return f"[{order.index(k) + 1}]"

    text = _MARKER.sub(swap, text)
    text = _REPEATED.sub(r"\1", text).strip()
    return text, order, sorted(dropped)


def _citation(marker: int, hit: Hit) -> Citation:
    c = hit.chunk
    return Citation(marker, c.doc_id, c.title, c.text, c.start, c.end, c.line_start, c.line_end, c.chunk_id)
