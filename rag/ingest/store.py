"""The registry of uploaded documents under ``<corpus_dir>/uploads`` and the sources the index is built from.

Each upload is two files with a generated name: ``<doc_id><suffix>`` (the
bytes as sent) and ``<doc_id>.json`` (format, title, size, pages of extracted
text). The JSON is written last, by an atomic rename, and removed first on
delete: it is the commit mark, so a kill at any moment leaves the document
either fully there or not there; :meth:`DocumentStore.recover` clears the
leftovers of an interrupted write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rag.corpus import CorpusError, CorpusLoadError, clean_document, load_corpus
from rag.ingest.pages import Extraction, Page, join_pages, normalise_breaks
from rag.ingest.sniff import SUFFIX, IngestError, check_name, sniff
from rag.types import CleanDocument, Document

UPLOADS = "uploads"
MIN_LETTERS = 8  # fewer letters (CJK or Latin) than this after cleaning: nothing worth indexing
_DOC_ID = re.compile(r"^up-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class Record:
    """One uploaded document as the registry keeps it."""

    doc_id: str
    name: str  # the client's file name, for display only
    format: str
    size: int
    added: str  # ISO time
    title: str
    pages: tuple[Page, ...]
    error: str = ""  # why it failed to index; a failed document stays out of builds

    @property
    def path(self) -> str:
        """The stored file, relative to the corpus folder."""
        return f"{UPLOADS}/{self.doc_id}{SUFFIX[self.format]}"

    @property
    def pending_ocr(self) -> int:
        return sum(p.needs_ocr for p in self.pages)

    @property
    def ocr_pages(self) -> int:
        return sum(p.ocr for p in self.pages)

    def document(self) -> Document:
        text, starts = join_pages([p.text for p in self.pages])
        sha = hashlib.sha256(text.encode()).hexdigest()
        display = self.title or Path(self.name).stem
        return Document(self.doc_id, self.path, text, sha, pages=starts if self.format == "pdf" else (),
                        title=display)


def extract(data: bytes, name: str, max_bytes: int) -> Extraction:
    """Sniff and extract one file.

    Raises:
        IngestError: too large, a format not accepted or not the one its name says,
            encrypted/broken, a decompression bomb, or no text at all.
    """
    if len(data) > max_bytes:
        raise IngestError(f"{name}: {len(data)} bytes is over the size limit of {max_bytes} bytes", 413)
    fmt = sniff(data, name)
    check_name(fmt, name)
    if fmt == "pdf":
        from rag.ingest.pdf import extract_pdf

        result = extract_pdf(data, name)
    elif fmt == "docx":
        from rag.ingest.docx import extract_docx

        result = extract_docx(data, name)
    elif fmt == "html":
        from rag.ingest.html import extract_html

        result = extract_html(data, name)
    else:
        result = Extraction(fmt, "", (Page(data.decode("utf-8-sig")),))
    pages = tuple(dataclasses.replace(p, text=normalise_breaks(p.text).strip()) for p in result.pages)
    result = dataclasses.replace(result, pages=pages)
    if result.characters == 0 and not any(p.needs_ocr for p in pages):
        raise IngestError(f"{name}: no text could be extracted ({fmt.upper()} with an empty text layer and no images)"
                          if fmt == "pdf" else f"{name}: no text could be extracted from this {fmt.upper()} file")
    if not any(p.needs_ocr for p in pages):
        # What the index would hold: page furniture and lone numbers are no document.
        text, starts = join_pages([p.text for p in pages])
        letters = sum(ch.isalpha() for ch in clean_source(Document("upload", name, text, "", starts)).text)
        if letters < MIN_LETTERS:
            raise IngestError(f"{name}: no text to index ({letters} letters after cleaning; at least {MIN_LETTERS})")
    return result


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DocumentStore:
    """Uploaded documents on disk. Cheap to build; every call reads the folder."""

    def __init__(self, corpus_dir: Path) -> None:
        self.folder = corpus_dir / UPLOADS

    def add(self, data: bytes, name: str, extraction: Extraction) -> Record:
        """Store a file and its extraction under a new generated id (the client's name is not used as a path)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        doc_id = f"up-{secrets.token_hex(6)}"
        record = Record(doc_id, Path(name.replace("\\", "/")).name[:200], extraction.format, len(data),
                        datetime.now(UTC).isoformat(timespec="seconds"), extraction.title[:200], extraction.pages)
        _write_atomic(self.folder / f"{doc_id}{SUFFIX[record.format]}", data)
        self.save(record)
        return record

    def save(self, record: Record) -> None:
        payload = dataclasses.asdict(record)
        _write_atomic(self.folder / f"{record.doc_id}.json", json.dumps(payload, ensure_ascii=False).encode())
        _fsync_dir(self.folder)

    def get(self, doc_id: str) -> Record | None:
        if not _DOC_ID.match(doc_id):
            return None
        path = self.folder / f"{doc_id}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return Record(**{**raw, "pages": tuple(Page(**p) for p in raw["pages"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def records(self) -> list[Record]:
        if not self.folder.is_dir():
            return []
        found = (self.get(p.stem) for p in sorted(self.folder.glob("up-*.json")))
        return sorted((r for r in found if r is not None), key=lambda r: (r.added, r.doc_id))

    def remove(self, doc_id: str) -> bool:
        """Delete a document's files (its record first: that is the commit). False when unknown."""
        record = self.get(doc_id)
        if record is None:
            return False
        (self.folder / f"{doc_id}.json").unlink()
        _fsync_dir(self.folder)
        (self.folder / f"{doc_id}{SUFFIX[record.format]}").unlink(missing_ok=True)
        return True

    def original(self, record: Record) -> bytes:
        return (self.folder / f"{record.doc_id}{SUFFIX[record.format]}").read_bytes()

    def recover(self) -> None:
        """Remove what an interrupted write or delete left: temp files, and stored files without a record."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path.name.startswith(".") and ".tmp" in path.name:
                path.unlink(missing_ok=True)
            elif path.suffix != ".json" and not (self.folder / f"{path.stem}.json").exists():
                path.unlink(missing_ok=True)


def load_sources(corpus_dir: Path) -> tuple[list[Document], list[CorpusError]]:
    """The index's inputs: the corpus folder's text files and every upload that is ready to index.

    Uploads still waiting for OCR, or marked failed, are left out.

    Raises:
        CorpusLoadError: no text file and no upload.
    """
    records = [r for r in DocumentStore(corpus_dir).records() if not r.error and not r.pending_ocr]
    try:
        docs, errors = load_corpus(corpus_dir)
    except CorpusLoadError:
        if not records:
            raise
        docs, errors = [], []
    return docs + [r.document() for r in records], errors


def clean_source(doc: Document) -> CleanDocument:
    """:func:`rag.corpus.clean_document`, keeping an upload's page map, and its title when the text has no heading."""
    clean = clean_document(doc)
    if not doc.pages and not doc.title:
        return clean
    title = doc.title if clean.title == doc.doc_id and doc.title else clean.title
    return dataclasses.replace(clean, pages=doc.pages, title=title)


__all__ = ["DocumentStore", "IngestError", "Record", "clean_source", "extract", "load_sources"]
