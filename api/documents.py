"""Routes for managing documents: upload (POST /documents), list, delete, and GET /index/status.

The work is done by :class:`rag.ingest.manager.DocumentManager` (kept on
``app.state.documents``); this module only maps it to HTTP. Upload and delete
need the API key when one is set, like every other route but /health.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.schemas import AUTH_RESPONSES, BODY_RESPONSES, ErrorResponse
from rag.config import Settings
from rag.ingest.manager import STATUSES, DocumentManager
from rag.ingest.sniff import IngestError
from rag.service import RagService


class DocumentInfo(BaseModel):
    doc_id: str
    title: str
    path: str = Field(description="the stored file, relative to the corpus folder (a generated name for uploads)")
    characters: int | None = Field(None, description="cleaned text length, once indexed")
    name: str = Field("", description="the uploaded file's own name (display only)")
    format: str
    pages: int | None = Field(None, description="pages of a PDF")
    ocr_pages: int = Field(0, description="pages whose text came from OCR")
    passages: int | None = Field(None, description="passages in the live index")
    size: int | None = Field(None, description="bytes")
    added: str | None = None
    status: str = Field(description=" | ".join(STATUSES))
    reason: str = ""
    uploaded: bool = Field(description="false for the corpus folder's own text files (not removable here)")


class UploadError(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="the file and the reason; a list of field errors when the form itself is invalid")


class UploadResponse(BaseModel):
    documents: list[DocumentInfo]


class IndexStatus(BaseModel):
    running: bool
    stage: str = Field(description="idle | ocr | indexing")
    progress: str
    pending: int = Field(description="documents added or removed that the live index does not reflect yet")
    last_build: dict[str, Any] | None
    index: str | None = Field(None, description="the build being served")
    documents: int | None = None
    chunks: int | None = None


def _manager(request: Request) -> DocumentManager:
    return request.app.state.documents  # type: ignore[no-any-return]


def _service(request: Request) -> RagService:
    return request.app.state.service  # type: ignore[no-any-return]


Manager = Annotated[DocumentManager, Depends(_manager)]
Service = Annotated[RagService, Depends(_service)]
ERRORS = {**AUTH_RESPONSES, **BODY_RESPONSES,
          413: {"model": ErrorResponse, "description": "a file over the size limit, or a decompression bomb"},
          415: {"model": ErrorResponse, "description": "not an accepted format, or not what its name says"},
          422: {"model": UploadError, "description": "encrypted, broken or empty file, or an invalid form"}}


def _rows(manager: DocumentManager, svc: RagService) -> list[DocumentInfo]:
    data = svc.data
    passages = Counter(c.doc_id for c in data.chunks)
    rows: list[DocumentInfo] = []
    uploaded = manager.documents()
    upload_ids = {r.doc_id for r in uploaded}
    for d in data.documents.values():
        if d.doc_id not in upload_ids and not d.path.startswith("uploads/"):
            rows.append(DocumentInfo(doc_id=d.doc_id, title=d.title, path=d.path, characters=len(d.text),
                                     format=d.path.rsplit(".", 1)[-1], passages=passages[d.doc_id],
                                     status="ready", uploaded=False))
    for r in uploaded:
        live = data.documents.get(r.doc_id)
        rows.append(DocumentInfo(
            doc_id=r.doc_id, title=live.title if live is not None and r.status == "ready" else r.title,
            path=r.path, characters=len(live.text) if live is not None else None, name=r.name, format=r.format,
            pages=r.pages, ocr_pages=r.ocr_pages, passages=passages[r.doc_id] if live is not None else None,
            size=r.size, added=r.added, status=r.status, reason=r.reason, uploaded=True))
    return rows


def register(app: FastAPI, protected: list[Any]) -> None:
    """Add the routes and a :class:`DocumentManager` whose builds the app's service loads."""
    settings: Settings = app.state.settings
    app.state.documents = DocumentManager(settings, on_built=lambda: app.state.service.reload())

    @app.post("/documents", response_model=UploadResponse, status_code=202, dependencies=protected,
              tags=["documents"], responses=ERRORS)
    async def upload(manager: Manager, file: Annotated[list[UploadFile], File(description="one or more files")]) -> Any:
        """Upload PDF, DOCX, HTML, TXT or MD files; they are indexed in the background (watch their status)."""
        files = []
        for f in file:
            name = (f.filename or "unnamed")[:200]
            if f.size is not None and f.size > settings.max_upload_bytes:
                raise HTTPException(413, f"{name}: {f.size} bytes is over the size limit of "
                                         f"{settings.max_upload_bytes} bytes")
            files.append((name, await f.read()))
        try:
            records = await run_in_threadpool(manager.add, files)
        except IngestError as exc:
            raise HTTPException(exc.status, str(exc)) from exc
        rows = {r.doc_id: r for r in manager.documents()}
        return UploadResponse(documents=[
            DocumentInfo(doc_id=r.doc_id, title=rows[r.doc_id].title, path=r.path, name=r.name, format=r.format,
                         pages=len(r.pages) if r.format == "pdf" else None, size=r.size, added=r.added,
                         status=rows[r.doc_id].status, reason=rows[r.doc_id].reason, uploaded=True)
            for r in records if r.doc_id in rows])

    @app.get("/documents", response_model=list[DocumentInfo], dependencies=protected, tags=["documents"],
             responses=AUTH_RESPONSES)
    def documents(manager: Manager, svc: Service) -> Any:
        """Every document: the corpus folder's files and uploads, with status (queued|indexing|ready|failed)."""
        svc.require()  # 503 with the command to run while no index is loaded, as before uploads existed
        return _rows(manager, svc)

    @app.delete("/documents/{doc_id}", status_code=202, dependencies=protected, tags=["documents"],
                responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
    def delete(doc_id: str, manager: Manager, svc: Service) -> Any:
        """Remove an uploaded document; the index drops it in the background (it shows as deleting until then)."""
        if manager.remove(doc_id):
            return {"doc_id": doc_id, "status": "deleting"}
        if svc.ready and doc_id in svc.data.documents and not svc.data.documents[doc_id].path.startswith("uploads/"):
            raise HTTPException(409, f"'{doc_id}' is a file of the corpus folder, not an upload: "
                                     "remove it there and rebuild the index")
        raise HTTPException(404, f"Unknown uploaded document '{doc_id[:100]}'")

    @app.get("/index/status", response_model=IndexStatus, dependencies=protected, tags=["documents"],
             responses=AUTH_RESPONSES)
    def index_status(manager: Manager, svc: Service) -> Any:
        """Whether a build is running, its progress, and the last build's time and result."""
        status = manager.index_status()
        if svc.ready:
            status.update(index=svc.version, documents=len(svc.data.documents), chunks=len(svc.data.chunks))
        return IndexStatus(**status)
