"""OCR of scanned PDF pages with RapidOCR (PP-OCRv4 Chinese models shipped inside its wheel).

The engine is built on first use (a few seconds), never at import. Pages are
rendered with pypdfium2 (installed with pdfplumber).
"""

from __future__ import annotations

import threading
from typing import Any

_ENGINE: list[Any] = []
_LOCK = threading.Lock()


def _engine() -> Any:
    with _LOCK:
        if not _ENGINE:
            from rapidocr_onnxruntime import RapidOCR

            _ENGINE.append(RapidOCR())
        return _ENGINE[0]


def _lines(result: list[Any]) -> list[str]:
    """Boxes -> text lines: boxes whose vertical centres are close are one line, read left to right."""
    boxes = []
    for box, text, _score in result or []:
        ys = [p[1] for p in box]
        boxes.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(p[0] for p in box), text))
    boxes.sort()
    lines: list[list[tuple[float, str]]] = []
    last_y, last_h = None, 0.0
    for y, h, x, text in boxes:
        if last_y is not None and abs(y - last_y) < 0.5 * max(h, last_h):
            lines[-1].append((x, text))
        else:
            lines.append([(x, text)])
            last_y, last_h = y, h
    return [" ".join(t for _, t in sorted(line)) for line in lines]


def ocr_pdf_page(data: bytes, index: int, dpi: int = 200) -> str:
    """The text of page ``index`` (0-based) of a PDF, read from its rendered image."""
    import numpy as np
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        page = pdf[index]
        image = page.render(scale=dpi / 72).to_pil().convert("RGB")
        page.close()
    finally:
        pdf.close()
    result, _ = _engine()(np.asarray(image))
    return "\n".join(_lines(result))
