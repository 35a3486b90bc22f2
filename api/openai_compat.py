"""OpenAI-compatible endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``.

The last user message is answered with the earlier turns as context. The reply
carries the answer with [n] markers and a short sources list; structured
citations ride along in an extra ``citations`` field. ``stream: true`` sends
server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas import MAX_MESSAGES, CitationOut, openai_responses
from rag.llm import renumber
from rag.service import RagService, Turn, answer_to_dict
from rag.types import Answer
from rag.writer import closest_passages

MODEL_ID = "hz-rag"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class OAMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Clients send many optional knobs (temperature, max_tokens, ...); they are accepted and ignored.
    model_config = ConfigDict(extra="allow")

    model: str = MODEL_ID
    messages: list[OAMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, v: list[OAMessage]) -> list[OAMessage]:
        users = [m for m in v if m.role in ("user", "assistant")]
        if not users or v[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return v


class OAChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class OAChoice(BaseModel):
    index: int = 0
    message: OAChoiceMessage
    finish_reason: Literal["stop"] = "stop"


class OAUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[OAChoice]
    usage: OAUsage
    citations: list[CitationOut] = Field(default_factory=list, description="Structured sources for the [n] markers.")
    abstained: bool = False


class OAModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class OAModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OAModel]


def reply_text(answer: Answer) -> str:
    """The answer with its [n] markers, then a short sources list; an abstaining
    answer lists the closest passages it promises."""
    if answer.abstained:
        return "\n".join([answer.text, *closest_passages(answer.hits)])
    if not answer.citations:
        return answer.text
    sources = "\n".join(
        f"[{c.id}] {c.title}（{c.doc_id}，第{c.line_start}-{c.line_end}行）" for c in answer.citations
    )
    return f"{answer.text}\n\n来源：\n{sources}"


def usage(prompt: str, reply: str) -> OAUsage:
    """Counts in characters: the service has no LLM tokenizer (a Chinese character is about a token)."""
    return OAUsage(prompt_tokens=len(prompt), completion_tokens=len(reply), total_tokens=len(prompt) + len(reply))


def _sources_as_written(raw: str, answer: Answer) -> str:
    """The sources list for an LLM reply streamed as written: its markers keep the numbers of
    the passages in the prompt (the final answer renumbers them 1..m)."""
    _, order, _ = renumber(raw, len(answer.hits))
    lines = [f"[{n}] {answer.hits[n - 1].chunk.title}（{answer.hits[n - 1].chunk.doc_id}，"
             f"第{answer.hits[n - 1].chunk.line_start}-{answer.hits[n - 1].chunk.line_end}行）" for n in order]
    return "\n\n来源：\n" + "\n".join(lines) if lines else ""


def _stream(items: Iterator[str | Answer], completion_id: str, created: int, model: str, prompt: str,
            include_usage: bool, on_answer: Callable[[Answer], None]) -> Iterator[str]:
    """SSE chunks: an LLM writer's text as it is written (else the answer in small pieces), then
    a last chunk with what a page needs besides the text. With ``include_usage`` every chunk
    carries ``usage: null`` and a last chunk with no choices carries the counts, as OpenAI does."""
    with_usage = {"usage": None} if include_usage else {}

    def event(choices: list[dict[str, Any]], extra: dict[str, Any]) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": choices, **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def delta(content: dict[str, Any], finish: str | None = None, extra: dict[str, Any] | None = None) -> str:
        return event([{"index": 0, "delta": content, "finish_reason": finish}], {**with_usage, **(extra or {})})

    yield delta({"role": "assistant", "content": ""})
    written: list[str] = []
    answer: Answer | None = None
    for item in items:
        if isinstance(item, str):
            written.append(item)
            yield delta({"content": item})
        else:
            answer = item
    assert answer is not None  # the service always ends with the answer
    on_answer(answer)
    raw = "".join(written)
    if written and answer.note.startswith("generated by"):
        tail = _sources_as_written(raw, answer)
    else:
        # No LLM, or it failed: the answer itself, in small pieces so a client shows it growing.
        tail = ("\n\n" if written else "") + reply_text(answer)
    for i in range(0, len(tail), 24):
        yield delta({"content": tail[i : i + 24]})
    # The last chunk carries what a page needs besides the text (the chat page renders from it).
    body = answer_to_dict(answer)
    keys = ("answer", "citations", "abstained", "confidence", "hits", "note", "question", "rewritten", "lead")
    yield delta({}, "stop", {k: body[k] for k in keys})
    if include_usage:
        yield event([], {"usage": usage(prompt, raw + tail).model_dump()})
    yield "data: [DONE]\n\n"


def register(app: FastAPI, protected: list[Depends], on_answer: Callable[[Answer], None]) -> None:
    """Add the /v1 routes; ``on_answer`` sees every answer (metrics)."""

    @app.get("/v1/models", response_model=OAModelList, dependencies=protected, tags=["openai"],
             responses=openai_responses(401, 413, 503))
    def models() -> Any:
        return OAModelList(data=[OAModel(id=MODEL_ID, created=0, owned_by="hz-rag")])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, dependencies=protected, tags=["openai"],
              responses={**openai_responses(400, 401, 413, 422, 503),
                         200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}})
    def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        """OpenAI chat completions over the sources (model name is ignored beyond being echoed)."""
        svc: RagService = request.app.state.service
        turns = [Turn(m.role, m.text()) for m in req.messages if m.role in ("user", "assistant")]
        created = int(time.time())
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        prompt = "".join(t.content for t in turns)
        if req.stream:
            # Retrieval and the judge run here, so their errors are HTTP errors; an LLM writer's
            # text then streams as it is written.
            items = svc.chat_stream(turns)
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(_stream(items, completion_id, created, req.model, prompt, include_usage, on_answer),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        answer = svc.chat(turns)
        on_answer(answer)
        text = reply_text(answer)
        used = usage(prompt, text)
        return ChatCompletionResponse(
            id=completion_id, created=created, model=req.model,
            choices=[OAChoice(message=OAChoiceMessage(content=text))],
            usage=used,
            citations=[CitationOut(**c) for c in answer_to_dict(answer)["citations"]],
            abstained=answer.abstained,
        )
