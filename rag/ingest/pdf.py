"""PDF text extraction: the text layer in reading order (columns kept apart), pages without one flagged for OCR.

pdfminer.six (through pdfplumber's pin) finds the text lines and their
positions; :func:`_reading_order` reads a two-column section column by column
instead of line across line. Running headers and footers are dropped by
:func:`~rag.ingest.pages.drop_repeated_furniture`.
"""

from __future__ import annotations

import io

from rag.ingest.pages import Extraction, Page, drop_repeated_furniture
from rag.ingest.sniff import IngestError

# A page with fewer characters than this in its text layer but an image on it is a scan.
MIN_TEXT_CHARS = 20
Line = tuple[float, float, float, str]  # x0, x1, top, text


def _reading_order(lines: list[Line], width: float) -> list[str]:
    """Lines (x0, x1, top, text) in reading order: a run of lines that keep to one side of the page's middle
    (a two-column section) reads the left column, then the right one; lines across the middle read as they come.
    """
    mid, slack = width / 2, width * 0.02
    ordered: list[str] = []
    run: list[Line] = []

    def flush() -> None:
        left = [x for x in run if x[1] <= mid + slack]
        right = [x for x in run if x[1] > mid + slack]
        ordered.extend(t for *_, t in sorted(left, key=lambda x: x[2]))
        ordered.extend(t for *_, t in sorted(right, key=lambda x: x[2]))
        run.clear()

    for line in sorted(lines, key=lambda x: (round(x[2]), x[0])):
        x0, x1, _top, text = line
        if x0 < mid - slack and x1 > mid + slack:  # spans the middle: single-column text
            flush()
            ordered.append(text)
        else:
            run.append(line)
    flush()
    return ordered


def _page_lines(layout) -> tuple[list[Line], bool]:  # type: ignore[no-untyped-def]
    """The page's text lines from top to bottom, and whether it holds an image."""
    from pdfminer.layout import LTFigure, LTImage, LTTextContainer, LTTextLine

    lines: list[tuple[float, float, float, str]] = []
    has_image = False

    def walk(item) -> None:  # type: ignore[no-untyped-def]
        nonlocal has_image
        if isinstance(item, LTTextLine):
            text = item.get_text().rstrip("\n")
            if text.strip():
                lines.append((item.x0, item.x1, layout.height - item.y1, text))
        elif isinstance(item, LTTextContainer | LTFigure):
            for child in item:
                walk(child)
        elif isinstance(item, LTImage):
            has_image = True

    for item in layout:
        walk(item)
    return sorted(lines, key=lambda x: (round(x[2]), x[0])), has_image


def extract_pdf(data: bytes, name: str, max_pages: int = 2000) -> Extraction:
    """The pages of a PDF; scanned pages come back with ``needs_ocr`` and no text.

    Raises:
        IngestError: encrypted (needs a password), broken, or more than ``max_pages`` pages.
    """
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams
    from pdfminer.pdfdocument import PDFDocument, PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfparser import PDFParser, PDFSyntaxError
    from pdfminer.psexceptions import PSException

    title = ""
    try:
        doc = PDFDocument(PDFParser(io.BytesIO(data)))
        info = doc.info[0] if doc.info else {}
        raw_title = info.get("Title")
        if isinstance(raw_title, bytes):
            title = raw_title.decode("utf-16" if raw_title[:2] in (b"\xfe\xff", b"\xff\xfe") else "latin-1", "ignore")
        raw_lines: list[list[Line]] = []
        images: list[bool] = []
        widths: list[float] = []
        laparams = LAParams(char_margin=2.0, line_margin=0.5)
        for count, layout in enumerate(extract_pages(io.BytesIO(data), laparams=laparams), start=1):
            if count > max_pages:
                raise IngestError(f"{name}: more than {max_pages} pages", 413)
            lines, has_image = _page_lines(layout)
            raw_lines.append(lines)
            images.append(has_image)
            widths.append(layout.width)
    except (PDFPasswordIncorrect, PDFEncryptionError) as exc:
        raise IngestError(f"{name}: the PDF is encrypted; remove the password and upload it again") from exc
    except IngestError:
        raise
    except (PDFSyntaxError, PSException, ValueError, KeyError, TypeError, AttributeError, IndexError,
            AssertionError, RecursionError) as exc:
        raise IngestError(f"{name}: a broken PDF that cannot be read ({type(exc).__name__})") from exc
    if not raw_lines:
        raise IngestError(f"{name}: the PDF has no pages")
    kept = drop_repeated_furniture(raw_lines, text=lambda x: x[3])
    pages = []
    for lines, has_image, width in zip(kept, images, widths, strict=True):
        text = "\n".join(_reading_order(lines, width))
        scanned = has_image and len("".join(text.split())) < MIN_TEXT_CHARS
        pages.append(Page("" if scanned else text, needs_ocr=scanned))
    return Extraction("pdf", title.strip(), tuple(pages))
