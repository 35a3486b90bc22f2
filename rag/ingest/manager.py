"""Background indexing of uploaded documents: OCR of scanned pages, then one incremental rebuild at a time.

Owns: the worker thread, each document's status (derived from the registry,
the live index's manifest and what the worker is doing, so a restart after a
crash reads the truth from disk), and the index status. The build itself is
:func:`rag.index.rebuild` (atomic swap); ``on_built`` lets the service load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.ingest.pages import Page
from rag.ingest.store import UPLOADS, DocumentStore, Record, clean_source, extract

log = logging.getLogger("rag.documents")
STATUSES = ("queued", "indexing", "ready", "failed", "deleting")


@dataclass(frozen=True, slots=True)
class DocumentStatus:
    """One row of the documents list."""

    doc_id: str
    title: str
    name: str
    path: str
    format: str
    pages: int | None
    ocr_pages: int
    size: int | None
    added: str | None
    status: str
    reason: str
    uploaded: bool


def live_files(settings: Settings) -> dict[str, str]:
    """The files (path -> sha256) the live index was built from; empty when there is none."""
    try:
        manifest = json.loads((settings.current_index / "manifest.json").read_text())
        return dict(manifest.get("files", {}))
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def build_lock(settings: Settings) -> Iterator[None]:
    """One build at a time across processes (the server's worker and `rag add`)."""
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    with (settings.index_dir / ".build.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_ocr(store: DocumentStore, record: Record, dpi: int,
            progress: Callable[[int, int], None] = lambda done, total: None) -> Record:
    """OCR the record's scanned pages one by one, saving the record at the end."""
    from rag.ingest.ocr import ocr_pdf_page

    data = store.original(record)
    pages = list(record.pages)
    todo = [i for i, p in enumerate(pages) if p.needs_ocr]
    for done, i in enumerate(todo):
        progress(done, len(todo))
        pages[i] = Page(ocr_pdf_page(data, i, dpi).strip(), ocr=True)
    progress(len(todo), len(todo))
    updated = dataclasses.replace(record, pages=tuple(pages))
    if not any(p.text for p in pages):
        updated = dataclasses.replace(updated, error="OCR found no text on the scanned pages")
    if store.get(record.doc_id) is None:  # deleted meanwhile
        return updated
    store.save(updated)
    return updated


def check_indexable(store: DocumentStore, record: Record) -> Record:
    """Mark a record failed when cleaning leaves it no text (it would add nothing to the index)."""
    if record.error or record.pending_ocr:
        return record
    if not clean_source(record.document()).text.strip():
        record = dataclasses.replace(record, error="no text left after cleaning")
        store.save(record)
    return record


def status_of(record: Record, live: dict[str, str], building: set[str], active: str) -> tuple[str, str]:
    if record.error:
        return "failed", record.error
    if record.doc_id == active:
        return "indexing", f"OCR of {record.pending_ocr} scanned page(s) (slower than a text layer)"
    if record.doc_id in building:  # until the service has loaded the new build too
        return "indexing", "building the index"
    if live.get(record.path) == record.document().sha256:
        return "ready", ""
    if record.pending_ocr:
        return "queued", f"{record.pending_ocr} scanned page(s) wait for OCR (slower than a text layer)"
    return "queued", ""


class DocumentManager:
    """Uploads, deletes and the single background builder. Light ``__init__``; ``start()`` runs the worker."""

    def __init__(self, settings: Settings, on_built: Callable[[], object] = lambda: None) -> None:
        self.settings = settings
        self.store = DocumentStore(settings.corpus_dir)
        self.on_built = on_built
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # uploads and deletes vs. the worker's reads
        self._thread: threading.Thread | None = None
        self._building: set[str] = set()
        self._active = ""  # the document being OCRed
        self._stage = "idle"
        self._progress = ""
        self._last: dict[str, Any] | None = None

    # --- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Clear leftovers of a crash and start the worker; it builds at once if the index is behind."""
        self.store.recover()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="documents-indexer", daemon=True)
            self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    # --- operations -------------------------------------------------------

    def add(self, files: list[tuple[str, bytes]]) -> list[Record]:
        """Extract every file first (any bad file rejects the request and stores nothing), then store them all.

        Raises:
            IngestError: the first bad file, named, with the reason.
        """
        extracted = [(name, data, extract(data, name, self.settings.max_upload_bytes)) for name, data in files]
        with self._lock:
            records = [self.store.add(data, name, ext) for name, data, ext in extracted]
        self._wake.set()
        return records

    def remove(self, doc_id: str) -> bool:
        with self._lock:
            removed = self.store.remove(doc_id)
        if removed:
            self._wake.set()
        return removed

    def documents(self) -> list[DocumentStatus]:
        """Uploads with their status, plus uploads still in the live index after their delete."""
        live = live_files(self.settings)
        rows = []
        for r in self.store.records():
            status, reason = status_of(r, live, self._building, self._active)
            rows.append(DocumentStatus(r.doc_id, r.title or Path(r.name).stem, r.name, r.path, r.format,
                                       len(r.pages) if r.format == "pdf" else None, r.ocr_pages, r.size,
                                       r.added, status, reason, True))
        known = {r.path for r in self.store.records()}
        for path in live:
            if path.startswith(f"{UPLOADS}/") and path not in known:
                doc_id = Path(path).stem
                rows.append(DocumentStatus(doc_id, doc_id, "", path, Path(path).suffix.lstrip("."), None, 0,
                                           None, None, "deleting", "removed; the index is being rebuilt", True))
        return rows

    def index_status(self) -> dict[str, Any]:
        live = live_files(self.settings)
        records = self.store.records()
        behind = [r for r in records if not r.error and live.get(r.path) != r.document().sha256]
        gone = [p for p in live if p.startswith(f"{UPLOADS}/") and p not in {r.path for r in records}]
        return {"running": self._stage != "idle", "stage": self._stage, "progress": self._progress,
                "pending": len(behind) + len(gone), "last_build": self._last}

    # --- worker -----------------------------------------------------------

    def _needs_build(self) -> bool:
        status = self.index_status()
        return bool(status["pending"])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._cycle()
            except Exception:  # the worker must outlive one bad cycle
                log.exception("document indexing cycle failed")
            finally:
                self._stage, self._progress, self._active = "idle", "", ""

    def _cycle(self) -> None:
        for record in self.store.records():
            if record.pending_ocr and not record.error and not self._stop.is_set():
                self._stage, self._active = "ocr", record.doc_id

                def progress(done: int, total: int, name: str = record.name) -> None:
                    self._progress = f"OCR {name}: page {done}/{total} (OCR is slower than a text layer)"

                try:
                    run_ocr(self.store, record, self.settings.ocr_dpi, progress)
                except Exception as exc:
                    log.exception("OCR failed for %s", record.doc_id)
                    if self.store.get(record.doc_id) is not None:
                        self.store.save(dataclasses.replace(record, error=f"OCR failed: {type(exc).__name__}"))
                self._active = ""
        with self._lock:
            for record in self.store.records():
                check_indexable(self.store, record)
        if not self._needs_build():
            return
        self.build()

    def build(self) -> None:
        """Rebuild the index now (blocking) and let the service load it; failures mark the new documents failed."""
        from rag.index import rebuild

        live = live_files(self.settings)
        waiting = [r for r in self.store.records()
                   if not r.error and not r.pending_ocr and live.get(r.path) != r.document().sha256]
        self._building = {r.doc_id for r in waiting}
        self._stage, self._progress = "indexing", f"building the index ({len(waiting)} new document(s))"
        t0 = time.perf_counter()
        try:
            with build_lock(self.settings):
                report = rebuild(self.settings, progress=False, log=log.info)
            self.on_built()
            self._last = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                          "seconds": round(report.seconds, 2), "ok": True, "error": "",
                          "documents": report.documents, "chunks": report.chunks}
        except Exception as exc:
            log.exception("index build failed")
            reason = f"index build failed: {type(exc).__name__}: {exc}"[:300]
            self._last = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                          "seconds": round(time.perf_counter() - t0, 2), "ok": False, "error": reason,
                          "documents": None, "chunks": None}
            with self._lock:
                for r in waiting:
                    if self.store.get(r.doc_id) is not None:
                        self.store.save(dataclasses.replace(r, error=reason))
        finally:
            self._building = set()
            self._stage, self._progress = "idle", ""
