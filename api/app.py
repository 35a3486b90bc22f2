"""The FastAPI application: ``create_app(settings)`` with a lifespan that loads the service.

Routes: /ask /search /chat /health /documents, the OpenAI-compatible /v1/*, the
admin reload, and the chat page at /. HTTP errors are raised only here; the
library raises plain exceptions.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import openai_compat
from api.schemas import (
    AUTH_RESPONSES,
    BODY_RESPONSES,
    COMMON_RESPONSES,
    AskRequest,
    AskResponse,
    ChatRequest,
    DocumentResponse,
    DocumentSummary,
    ErrorResponse,
    HealthResponse,
    Paragraph,
    ReloadResponse,
    SearchRequest,
    SearchResponse,
)
from rag.config import Settings
from rag.index import IndexNotReady
from rag.service import RagService, Turn, answer_to_dict, hit_to_dict

log = logging.getLogger("rag.api")
STATIC = Path(__file__).parent / "static"


class BodyLimit:
    """Rejects request bodies over ``limit`` bytes with 413 before the app parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._reject(send)
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
            if size > self.limit:
                await self._reject(send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = f'{{"detail":"request body too large (limit {self.limit} bytes)"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
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
            if service.reload():
                log.info("index reloaded: %s", service.version)
            elif service.error and service.error != reported:
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
        svc = service or RagService(settings)
        if not svc.ready:
            svc.warm_up()
        if not svc.ready:
            log.warning("service not ready: %s", svc.error)
        app.state.service = svc
        stop = threading.Event()
        watcher = None
        if settings.reload_watch_seconds > 0:
            watcher = threading.Thread(target=_watch, args=(app, stop), name="index-watch", daemon=True)
            watcher.start()
        yield
        stop.set()

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
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(IndexNotReady)
    async def _not_ready(request: Request, exc: IndexNotReady) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError) -> JSONResponse:
        if isinstance(exc, ValidationError):
            # A pydantic error raised inside a route is the server's own data not fitting its
            # models (requests are validated before the route runs): a 500, not the client's fault.
            return await _unexpected(request, exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Keep FastAPI's shape, minus echoed input (it may be huge or hold secrets).
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    protected = [Depends(require_key)]
    answering = {**AUTH_RESPONSES, **BODY_RESPONSES}

    @app.get("/health", response_model=HealthResponse, tags=["service"],
             responses={503: {"model": HealthResponse}})
    def health(svc: Service) -> Any:
        """Readiness: 200 when the index is loaded, 503 with the command to run when not."""
        ready = svc.ready  # first: it asks the store (Milvus), and svc.error then says why not
        body = HealthResponse(status="not ready", ready=False, model=svc.embedder.name, detail=svc.error)
        if ready:
            data = svc.data
            # detail: why a rebuilt index was not loaded, if it was not (the previous one keeps serving).
            body = HealthResponse(status="ok", ready=True, chunks=len(data.chunks), documents=len(data.documents),
                                  model=svc.embedder.name, backend=svc.embedder.backend,
                                  index_built_at=data.manifest.get("built_at"),
                                  detail=svc.error)
            return body
        return JSONResponse(body.model_dump(), status_code=503)

    @app.post("/ask", response_model=AskResponse, dependencies=protected, tags=["answers"], responses=answering)
    def ask(req: AskRequest, svc: Service) -> Any:
        """Answer a question with citations, or abstain when the sources do not hold it."""
        return answer_to_dict(svc.ask(req.question, top_k=req.top_k, mode=req.mode))

    @app.post("/search", response_model=SearchResponse, dependencies=protected, tags=["answers"],
              responses=answering)
    def search(req: SearchRequest, svc: Service) -> Any:
        """Retrieved passages only."""
        return {"hits": [hit_to_dict(h) for h in svc.search(req.query, top_k=req.top_k, mode=req.mode)]}

    @app.post("/chat", response_model=AskResponse, dependencies=protected, tags=["answers"], responses=answering)
    def chat(req: ChatRequest, svc: Service) -> Any:
        """Answer the last user message; follow-ups are resolved from the history."""
        turns = [Turn(m.role, m.content) for m in req.messages]
        return answer_to_dict(svc.chat(turns, top_k=req.top_k, mode=req.mode))

    @app.get("/documents", response_model=list[DocumentSummary], dependencies=protected, tags=["documents"],
             responses=AUTH_RESPONSES)
    def documents(svc: Service) -> Any:
        return [DocumentSummary(doc_id=d.doc_id, title=d.title, path=d.path, characters=len(d.text))
                for d in svc.data.documents.values()]

    @app.get("/documents/{doc_id}", response_model=DocumentResponse, dependencies=protected, tags=["documents"],
             responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse, "description": "unknown document id"}})
    def document(doc_id: str, svc: Service) -> Any:
        """The cleaned text of one document, by paragraph with raw line numbers."""
        docs = svc.data.documents
        doc = docs.get(doc_id)
        if doc is None:
            raise HTTPException(404, f"Unknown document '{doc_id[:100]}'. Known ids: {sorted(docs)}")
        from rag.corpus import line_span

        paragraphs, pos = [], 0
        for piece in doc.text.split("\n"):
            if piece:
                lo, hi = line_span(doc, pos, pos + len(piece))
                paragraphs.append(Paragraph(start=pos, end=pos + len(piece), line_start=lo, line_end=hi, text=piece))
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

    openai_compat.register(app, protected)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index_page() -> Any:
        page = STATIC / "index.html"
        if not page.is_file():
            raise HTTPException(404, "the web page is not installed")
        return FileResponse(page)

    return app


