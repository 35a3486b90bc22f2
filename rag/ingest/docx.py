"""DOCX text extraction with python-docx, after checking the archive is no decompression bomb."""

from __future__ import annotations

import io
import zipfile

from rag.ingest.pages import Extraction, Page
from rag.ingest.sniff import IngestError

MAX_UNPACKED = 200 * 1024 * 1024  # bytes, all members together
MAX_RATIO = 200  # unpacked / packed, per member of some size


def check_zip(data: bytes, name: str, max_unpacked: int = MAX_UNPACKED) -> None:
    """Refuse a ZIP whose members unpack to far more than they weigh (read from the directory, nothing unpacked).

    Raises:
        IngestError: a decompression bomb or a broken archive.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{name}: a broken DOCX archive ({exc})") from exc
    total = sum(i.file_size for i in infos)
    if total > max_unpacked:
        raise IngestError(
            f"{name}: a decompression bomb (unpacks to {total} bytes, limit {max_unpacked})", 413)
    for info in infos:
        if info.file_size > 1024 * 1024 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise IngestError(
                f"{name}: a decompression bomb ({info.filename} unpacks {info.file_size // max(info.compress_size, 1)}"
                f"-fold, limit {MAX_RATIO})", 413)


def extract_docx(data: bytes, name: str) -> Extraction:
    """Paragraphs (headings as Markdown headings, so cleaning sees them) and table rows, in body order.

    Raises:
        IngestError: a bomb, or an archive python-docx cannot read.
    """
    check_zip(data, name)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many types for a damaged package
        raise IngestError(f"{name}: a broken DOCX that cannot be read ({type(exc).__name__})") from exc
    lines: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            if style.lower().startswith(("heading", "title")) or style.startswith("标题"):
                digits = "".join(c for c in style if c.isdigit())
                level = min(int(digits), 6) if digits else 1
                lines.append("#" * level + " " + text)
            else:
                lines.append(text)
        elif isinstance(block, Table):
            for row in block.rows:
                cells = [c.text.strip() for c in row.cells]
                if any(cells):
                    lines.append(" | ".join(cells))
    title = (document.core_properties.title or "").strip()
    return Extraction("docx", title, (Page("\n".join(lines)),))
