"""Wire schemas, kept apart from the internal dataclasses in ``rag.types``.

Shape checks live here as validators (FastAPI's 422 body names the field). The
question text itself is not checked here: the service normalises it
(``rag.normalize``) and rejects only what is empty once normalised or over
``RAG_MAX_QUESTION_CHARS``; the app turns that into a 422 in the same shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TOP_K = 20
MAX_MESSAGES = 50
MAX_MESSAGE_CHARS = 20000
Mode = Literal["hybrid", "keyword", "dense"]
QUESTION_DOC = "The question (any script; emoji and invisible characters are ignored). At most RAG_MAX_QUESTION_CHARS (1000) characters."


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., description=QUESTION_DOC)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description="Passages to return (default 5).")
    mode: Mode = Field("hybrid", description="Retrieval mode; keyword and dense exist for evaluation.")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., description=QUESTION_DOC)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(..., max_length=MAX_MESSAGE_CHARS)


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
    confidence: float = Field(
        ge=0.0, le=1.0,
        description="Calibrated probability that the answer is right (the judge's; fitted on the dev split). "
        "The service abstains below the judge's threshold.",
    )
    question: str = Field(description="The question answered: a chat follow-up rewritten into a standalone question.")
    rewritten: bool = Field(False, description="True when `question` was rewritten from the chat history.")
    lead: str = Field("", description="The value or name asked for, as the cited sentence states it; empty when none.")
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
    llm: bool = Field(False, description="An LLM writes the answers (RAG_LLM_BASE_URL is set)")
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


class OAErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OAErrorResponse(BaseModel):
    """OpenAI's error shape, used for every error on /v1/*."""

    error: OAErrorBody


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


def openai_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented errors of a /v1 route, all in OpenAI's shape."""
    described = {**COMMON_RESPONSES, **BODY_RESPONSES, **AUTH_RESPONSES,
                 422: {"description": "invalid body, or a question that is empty once normalised or too long"}}
    return {s: {"model": OAErrorResponse, "description": described[s]["description"]} for s in statuses}
