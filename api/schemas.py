"""Wire schemas, kept apart from the internal dataclasses in ``rag.types``.

Input checks live here as validators, so every bad request gets FastAPI's
422 body with a message that says what is wrong.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_QUESTION_CHARS = 1000
MAX_TOP_K = 20
MAX_MESSAGES = 50
Mode = Literal["hybrid", "keyword", "dense"]

_ALLOWED_LETTER_PREFIXES = ("CJK", "LATIN", "FULLWIDTH LATIN", "HALFWIDTH", "IDEOGRAPHIC", "BOPOMOFO")


def check_text(value: str, what: str) -> str:
    """Reject text the service cannot meaningfully answer, with a reason.

    Empty or whitespace-only text, control and invisible format characters,
    emoji and other pictographs, and letters of scripts other than Chinese and
    Latin (mixed-script input is almost always a mistake or a spoof).
    """
    if not value.strip():
        raise ValueError(f"{what} must not be empty or only whitespace")
    for ch in value:
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in "\n\t\r":
            raise ValueError(f"{what} contains a control character (U+{ord(ch):04X})")
        if cat in ("Cf", "Co", "Cn", "Cs"):
            raise ValueError(f"{what} contains an invisible or unassigned character (U+{ord(ch):04X})")
        if cat == "So" and ord(ch) >= 0x2600:
            raise ValueError(f"{what} contains an emoji or pictograph (U+{ord(ch):04X}); please ask in text")
        if cat.startswith("L"):
            name = unicodedata.name(ch, "")
            if not name.startswith(_ALLOWED_LETTER_PREFIXES):
                script = name.split(" ")[0].title() if name else "unknown"
                raise ValueError(
                    f"{what} mixes in letters of an unsupported script ({script} '{ch}'); "
                    "use Chinese or Latin letters"
                )
    return value.strip()


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., min_length=1, max_length=MAX_QUESTION_CHARS, description="The question, in Chinese.")
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description="Passages to return (default 5).")
    mode: Mode = Field("hybrid", description="Retrieval mode; keyword and dense exist for evaluation.")

    @field_validator("question")
    @classmethod
    def _question(cls, v: str) -> str:
        return check_text(v, "question")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=MAX_QUESTION_CHARS)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        return check_text(v, "query")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(..., max_length=20000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if v[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        if len(v[-1].content) > MAX_QUESTION_CHARS:
            raise ValueError(f"the last user message must be at most {MAX_QUESTION_CHARS} characters")
        check_text(v[-1].content, "the last user message")
        return v


class CitationOut(BaseModel):
    id: int
    doc_id: str
    title: str
    text: str
    start: int
    end: int
    line_start: int
    line_end: int
    chunk_id: int
    page: int | None = Field(None, description="1-based page of an uploaded PDF; null for other documents")


class HitOut(BaseModel):
    chunk_id: int
    doc_id: str
    title: str
    text: str
    score: float
    start: int
    end: int
    line_start: int
    line_end: int


class AskResponse(BaseModel):
    answer: str
    abstained: bool
    confidence: float
    question: str = Field(description="The question answered, as resolved from the chat history.")
    citations: list[CitationOut]
    hits: list[HitOut] = Field(
        description="Passages: those the answer cites first (the best first), then the rest by retrieval score."
    )
    note: str = ""


class SearchResponse(BaseModel):
    hits: list[HitOut]


class HealthResponse(BaseModel):
    status: Literal["ok", "not ready"]
    ready: bool
    chunks: int | None = None
    documents: int | None = None
    model: str
    backend: str | None = Field(None, description="How the model runs: onnx or torch")
    index_built_at: str | None = None
    detail: str | None = None


class Paragraph(BaseModel):
    start: int
    end: int
    line_start: int
    line_end: int
    text: str
    page: int | None = Field(None, description="1-based page of an uploaded PDF the paragraph starts on")


class DocumentResponse(BaseModel):
    doc_id: str
    title: str
    path: str
    text: str
    paragraphs: list[Paragraph]


class DocumentSummary(BaseModel):
    doc_id: str
    title: str
    path: str
    characters: int


class ReloadResponse(BaseModel):
    reloaded: bool
    index: str | None = Field(description="The build being served after the call.")
    error: str | None = Field(None, description="Why the rebuilt index was not loaded, if it was not.")


class ErrorResponse(BaseModel):
    detail: str


# Documented error responses, so the OpenAPI schema lists every status a route can answer.
# Every route: the body limit runs before routing, and an unloaded index answers 503.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "request body over the limit (64 KiB by default)"},
    503: {"model": ErrorResponse, "description": "index not ready: the detail says which command to run"},
}
# Routes that read a JSON body: a body that is not even text fails before validation (422).
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body could not be parsed"},
}
# Routes behind RAG_API_KEY (when it is set).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key (only when RAG_API_KEY is set)"},
}
