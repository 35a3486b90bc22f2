"""HTML main-text extraction with trafilatura (Apache-2.0): navigation, footers and ads are left out."""

from __future__ import annotations

from rag.ingest.pages import Extraction, Page
from rag.ingest.sniff import IngestError


def extract_html(data: bytes, name: str) -> Extraction:
    """The article text of a web page, with its title.

    Raises:
        IngestError: the page is not valid UTF-8 or HTML trafilatura can parse.
    """
    import trafilatura

    try:
        html = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{name}: the web page is not UTF-8 (byte {exc.start})", 415) from exc
    # Headings come out as Markdown "# ..." lines, which the cleaning takes as headings.
    text = trafilatura.extract(html, output_format="markdown", include_comments=False, include_tables=True,
                               favor_precision=True, with_metadata=False) or ""
    meta = trafilatura.extract_metadata(html)
    title = (meta.title if meta is not None and meta.title else "") or ""
    return Extraction("html", title.strip(), (Page(text),))
