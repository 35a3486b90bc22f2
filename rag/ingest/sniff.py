"""Deciding a file's format from its content (magic bytes), never from its name."""

from __future__ import annotations

import io
import zipfile

FORMATS = ("pdf", "docx", "html", "txt", "md")
# What each format's file is called when stored (the client's name is never used).
SUFFIX = {"pdf": ".pdf", "docx": ".docx", "html": ".html", "txt": ".txt", "md": ".md"}


class IngestError(ValueError):
    """A file that cannot be taken in; ``status`` is the HTTP status that fits, the message names the file."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _looks_like_html(head: str) -> bool:
    lowered = head.lstrip("\ufeff \t\r\n").lower()
    return lowered.startswith(("<!doctype html", "<html", "<head", "<body", "<meta", "<!--")) or (
        "<html" in lowered[:2048] or "<body" in lowered[:4096]
    )


def sniff(data: bytes, name: str) -> str:
    """The format of ``data``: one of :data:`FORMATS`.

    Plain text is UTF-8 that is not HTML; it is called ``md`` only when the
    name says so (Markdown has no magic bytes), else ``txt``.

    Raises:
        IngestError: empty, or a binary format that is not accepted, or not UTF-8 text.
    """
    if not data:
        raise IngestError(f"{name}: the file is empty")
    if data.startswith(b"%PDF-") or data[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile as exc:
            raise IngestError(f"{name}: a broken ZIP archive ({exc})") from exc
        if "word/document.xml" in names:
            return "docx"
        raise IngestError(
            f"{name}: a ZIP archive that is not a Word document (no word/document.xml); "
            f"accepted formats: {', '.join(FORMATS)}", 415,
        )
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise IngestError(f"{name}: an old binary Office file (.doc/.xls); save it as .docx", 415)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{name}: not a PDF, DOCX, HTML or UTF-8 text file (undecodable byte at {exc.start}); "
            f"accepted formats: {', '.join(FORMATS)}", 415,
        ) from exc
    if "\x00" in text:
        raise IngestError(f"{name}: binary data, not text; accepted formats: {', '.join(FORMATS)}", 415)
    if _looks_like_html(text[:4096]):
        return "html"
    return "md" if name.lower().endswith((".md", ".markdown")) else "txt"


def check_name(fmt: str, name: str) -> None:
    """Reject a file whose name claims another format than its content has.

    A name with no known suffix is fine (the content decides).

    Raises:
        IngestError: e.g. ``report.pdf`` that holds HTML.
    """
    lowered = name.lower()
    claimed = {".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html",
               ".txt": "txt", ".md": "md", ".markdown": "md"}
    for suffix, claim in claimed.items():
        if lowered.endswith(suffix):
            same = claim == fmt or {claim, fmt} <= {"txt", "md"}
            if not same:
                raise IngestError(f"{name}: the name says {claim.upper()} but the content is {fmt.upper()}", 415)
            return
