"""The FastAPI application: ``create_app(settings)`` with a lifespan that loads the service.

Routes: /ask /search /chat /health /documents, the OpenAI-compatible /v1/*, the
admin reload, and the chat page at /. HTTP errors are raised only here; the
library raises plain exceptions.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import documents as documents_api
from api import openai_compat
from api.observability import Metrics, RequestContext, quiet_progress_bars
from api.schemas import (
    AUTH_RESPONSES,
    BODY_RESPONSES,
    COMMON_RESPONSES,
    AskRequest,
    AskResponse,
    ChatRequest,
    DocumentResponse,
    ErrorResponse,
    HealthResponse,
    Paragraph,
    ReloadResponse,
    SearchRequest,
    SearchResponse,
)
from rag.config import Settings
from rag.index import IndexNotReady
from rag.normalize import QuestionRejected
from rag.service import RagService, Turn, answer_to_dict, hit_to_dict
from rag.types import Answer

log = logging.getLogger("rag.api")
STATIC = Path(__file__).parent / "static"
OPENAI_PREFIX = "/v1/"
# Where the question sits in each body, for a 422 on the question text (the chat routes: last message).
_QUESTION_LOC: dict[str, list[str | int]] = {"/ask": ["body", "question"], "/search": ["body", "query"]}
# OpenAI's error ``type`` by status; other 4xx are invalid requests, 5xx server errors.
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error"}


def error_body(path: str, status: int, message: str, *, detail: Any = None, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The error body for ``path``: OpenAI's shape on /v1/*, FastAPI's ``{"detail": ...}`` elsewhere."""
    if path.startswith(OPENAI_PREFIX):
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {"detail": message if detail is None else detail}


def error_response(request: Request, status: int, message: str, *, detail: Any = None,
                   param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(request.url.path, status, message, detail=detail, param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Rejects request bodies over ``limit`` bytes with 413 before the app parses them.

    The rest of a rejected body is read and thrown away (up to ``drain_bytes``)
    before the 413 goes out: a server that answers and closes while the client is
    still sending makes the client's kernel see a reset, and the client never reads
    the 413. A body declared larger than ``drain_bytes`` is answered at once and
    the connection closed: waiting for it would let one client hold the server.
    """

    drain_bytes = 16 * 1024 * 1024

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit or limit  # POST /documents (file uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        limit = self.upload_limit if (scope["method"], scope["path"]) == ("POST", "/documents") else self.limit
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            drained = declared.isdigit() and int(declared) <= self.drain_bytes and await self._drain(receive, 0)
            await self._reject(scope, send, drained, limit)
            return
        # Read the (bounded) body here so chunked uploads are limited too.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            more = message.get("more_body", False)
            if size > limit:
                await self._reject(scope, send, not more or await self._drain(receive, size), limit)
                return
            chunks.append(body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, size: int) -> bool:
        """Read and drop the rest of the body; True when it all arrived within ``drain_bytes``."""
        while size <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return False  # the client went away
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    async def _reject(self, scope: Scope, send: Send, drained: bool, limit: int) -> None:
        message = f"request body too large (limit {limit} bytes)"
        body = json.dumps(error_body(scope.get("path", ""), 413, message, code="request_too_large")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if not drained:
            headers.append((b"connection", b"close"))  # the unread rest cannot start another request
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def get_service(request: Request) -> RagService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[RagService, Depends(get_service)]


def require_key(request: Request) -> None:
    """When RAG_API_KEY is set, demand ``Authorization: Bearer <key>`` (constant-time compare)."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        return
    _check_bearer(request, settings.api_key.get_secret_value())


def require_admin(request: Request) -> None:
    """Admin endpoints are off without a key, and always need it."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        raise HTTPException(404, "Not Found")
    _check_bearer(request, settings.api_key.get_secret_value())


def _check_bearer(request: Request, key: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})


def _watch(app: FastAPI, stop: threading.Event) -> None:
    """Poll the ``current`` index link and hot-swap a rebuilt index."""
    service: RagService = app.state.service
    interval = app.state.settings.reload_watch_seconds
    reported = service.error
    while not stop.wait(interval):
        try:
            # A swap is logged by the service (which build, built when).
            if not service.reload() and service.error and service.error != reported:
                # Said once per failure, not on every poll.
                log.warning("index not loaded%s: %s",
                            "; still serving the previous index" if service.ready else "", service.error)
            reported = service.error
        except Exception:  # the watcher must outlive a bad build
            log.exception("index reload failed; still serving the previous index")


def create_app(settings: Settings | None = None, service: RagService | None = None) -> FastAPI:
    """Build the app. The model and index load in the lifespan, once.

    Args:
        settings: the configuration; read from the environment when omitted.
        service: an already-built service (tests share one across apps).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet_progress_bars()
        svc = service or RagService(settings)
        if not svc.ready:
            svc.warm_up()
        if not svc.ready:
            log.warning("service not ready: %s", svc.error)
        app.state.service = svc
        metrics.watch(svc)
        app.state.documents.start()  # resumes indexing that a restart interrupted
        stop = threading.Event()
        watcher = None
        if settings.reload_watch_seconds > 0:
            watcher = threading.Thread(target=_watch, args=(app, stop), name="index-watch", daemon=True)
            watcher.start()
        yield
        stop.set()
        app.state.documents.stop()

    app = FastAPI(
        title="Hangzhou industrial zones — cited answers",
        description="Offline question answering over Chinese articles, with every answer citing its source sentence.",
        version="0.1.0",
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    # Several files of up to max_upload_bytes each may come in one upload request.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, upload_limit=4 * settings.max_upload_bytes + 2**20)
    # Outermost: 413s and auth failures get a request id and are counted too.
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(RequestContext, metrics=metrics, routes=app.router.routes)

    @app.exception_handler(IndexNotReady)
    async def _not_ready(request: Request, exc: IndexNotReady) -> JSONResponse:
        return error_response(request, 503, str(exc), code="index_not_ready")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path in Allow; a path
            # with one route per method (/documents) lists the methods of all of them.
            methods: set[str] = set()
            for route in app.router.routes:
                if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
                    methods |= route.methods
            exc = StarletteHTTPException(405, exc.detail, {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))})
        if not request.url.path.startswith(OPENAI_PREFIX):
            return await http_exception_handler(request, exc)
        return error_response(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(QuestionRejected)
    async def _rejected(request: Request, exc: QuestionRejected) -> JSONResponse:
        # The same 422 shape as FastAPI's own, pointing at the text that was rejected.
        loc = _QUESTION_LOC.get(request.url.path, ["body", "messages", -1, "content"])
        issue = {"loc": loc, "msg": str(exc), "type": "value_error"}
        return error_response(request, 422, str(exc), detail=[issue], param="messages", code="invalid_question")

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError) -> JSONResponse:
        if isinstance(exc, ValidationError):
            # A pydantic error raised inside a route is the server's own data not fitting its
            # models (requests are validated before the route runs): a 500, not the client's fault.
            return await _unexpected(request, exc)
        return error_response(request, 400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return error_response(request, 500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Keep FastAPI's shape, minus echoed input (it may be huge or hold secrets).
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        # OpenAI's shape has one message and one param: every error in the message, the first as param.
        where = [".".join(str(p) for p in e["loc"][1:]) or "body" for e in errors]
        message = "; ".join(f"{w}: {e['msg']}" for w, e in zip(where, errors, strict=True))
        return error_response(request, 422, message, detail=errors, param=where[0] if where else None,
                              code="invalid_request")

    def answered(answer: Answer) -> Answer:
        metrics.record_answer(answer.abstained)
        return answer

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_key)])
    def metrics_page() -> Response:
        """Prometheus text format (behind the API key when one is set: send it as a bearer token)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    protected = [Depends(require_key)]
    answering = {**AUTH_RESPONSES, **BODY_RESPONSES}

    @app.get("/health", response_model=HealthResponse, tags=["service"],
             responses={503: {"model": HealthResponse}})
    def health(svc: Service) -> Any:
        """Readiness: 200 when the index is loaded, 503 with the command to run when not."""
        llm = svc.generator is not None
        body = HealthResponse(status="not ready", ready=False, model=svc.embedder.name, llm=llm, detail=svc.error)
        if svc.ready:
            data = svc.data
            # detail: why a rebuilt index was not loaded, if it was not (the previous one keeps serving).
            body = HealthResponse(status="ok", ready=True, chunks=len(data.chunks), documents=len(data.documents),
                                  model=svc.embedder.name, backend=svc.embedder.backend,
                                  index_built_at=data.manifest.get("built_at"), llm=llm,
                                  detail=svc.error)
            return body
        return JSONResponse(body.model_dump(), status_code=503)

    @app.post("/ask", response_model=AskResponse, dependencies=protected, tags=["answers"], responses=answering)
    def ask(req: AskRequest, svc: Service) -> Any:
        """Answer a question with citations, or abstain when the sources do not hold it."""
        return answer_to_dict(answered(svc.ask(req.question, top_k=req.top_k, mode=req.mode)))

    @app.post("/search", response_model=SearchResponse, dependencies=protected, tags=["answers"],
              responses=answering)
    def search(req: SearchRequest, svc: Service) -> Any:
        """Retrieved passages only."""
        return {"hits": [hit_to_dict(h) for h in svc.search(req.query, top_k=req.top_k, mode=req.mode)]}

    @app.post("/chat", response_model=AskResponse, dependencies=protected, tags=["answers"], responses=answering)
    def chat(req: ChatRequest, svc: Service) -> Any:
        """Answer the last user message; follow-ups are resolved from the history."""
        turns = [Turn(m.role, m.content) for m in req.messages]
        return answer_to_dict(answered(svc.chat(turns, top_k=req.top_k, mode=req.mode)))

    @app.get("/documents/{doc_id}", response_model=DocumentResponse, dependencies=protected, tags=["documents"],
             responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse, "description": "unknown document id"}})
    def document(doc_id: str, svc: Service) -> Any:
        """The cleaned text of one document, by paragraph with raw line numbers."""
        docs = svc.data.documents
        doc = docs.get(doc_id)
        if doc is None:
            raise HTTPException(404, f"Unknown document '{doc_id[:100]}'. Known ids: {sorted(docs)}")
        from rag.corpus import line_span
        from rag.ingest.pages import page_of_line

        paragraphs, pos = [], 0
        for piece in doc.text.split("\n"):
            if piece:
                lo, hi = line_span(doc, pos, pos + len(piece))
                paragraphs.append(Paragraph(start=pos, end=pos + len(piece), line_start=lo, line_end=hi, text=piece,
                                            page=page_of_line(doc.pages, lo)))
            pos += len(piece) + 1
        return DocumentResponse(doc_id=doc.doc_id, title=doc.title, path=doc.path, text=doc.text, paragraphs=paragraphs)

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(require_admin)], tags=["admin"],
              responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse, "description": "off: no API key is set"}})
    def reload(svc: Service) -> Any:
        """Load a rebuilt index now (the file watch also does this within a few seconds)."""
        swapped = svc.reload()
        if not svc.ready:
            raise IndexNotReady(svc.error or "index not loaded")
        return ReloadResponse(reloaded=swapped, index=svc.version, error=svc.error)

    openai_compat.register(app, protected, answered)
    documents_api.register(app, protected)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index_page() -> Any:
        page = STATIC / "index.html"
        if not page.is_file():
            raise HTTPException(404, "the web page is not installed")
        return FileResponse(page)

    return app


