"""Benchmark of document intake: `python -m tests.bench_documents` writes eval/reports/documents-bench.md.

Measures extraction speed (pages per second) for a text-layer PDF printed by
Chromium and for a scanned (image-only) PDF read by OCR, and the time from
POST /documents of a 20-page PDF to the first answer that cites it, on a real
server over a temp copy of the corpus and index (nothing is left in the repo).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests import docmaker
from tests.conftest import ONNX_DIR, ROOT, copy_corpus_and_index, run_server

REPORT = ROOT / "eval" / "reports" / "documents-bench.md"


def main() -> int:
    logging.disable(logging.WARNING)
    from api.app import create_app
    from rag.config import Settings
    from rag.ingest.manager import run_ocr
    from rag.ingest.store import DocumentStore, extract

    tmp = Path(tempfile.mkdtemp(prefix="docbench-"))
    try:
        html = docmaker.pdf_html("青禾湾园区的星澜储能实验室拥有研究人员412名，实验室主任是顾明远。",
                                 filler_paragraphs=200)
        pdf = docmaker.print_pdf(html, tmp, "twenty")
        data = pdf.read_bytes()
        t0 = time.perf_counter()
        text = extract(data, pdf.name, 50 << 20)
        text_s = time.perf_counter() - t0
        pages = len(text.pages)

        scans = [docmaker.scanned_pdf([f"第{i}页：扫描件文字识别测试，云栖镜湖科创港首批入驻企业共有37家。",
                                       "其中龙头企业是曜石光电公司，园区于2030年正式开园。"] * 6, tmp, f"scan{i}")
                 for i in range(3)]
        store = DocumentStore(tmp / "ocr-corpus")
        records = [store.add(p.read_bytes(), p.name, extract(p.read_bytes(), p.name, 50 << 20)) for p in scans]
        run_ocr(store, records[0], 200)  # the first call loads the OCR models
        t0 = time.perf_counter()
        for r in records[1:]:
            run_ocr(store, r, 200)
        ocr_s = time.perf_counter() - t0
        ocr_pages = sum(len(r.pages) for r in records[1:])

        corpus, index = copy_corpus_and_index(Settings(corpus_dir=ROOT / "corpus", index_dir=ROOT / "index"),
                                              tmp / "corpus", tmp / "index")
        settings = Settings(corpus_dir=corpus, index_dir=index, reload_watch_seconds=0, onnx_dir=ONNX_DIR)
        with run_server(create_app(settings)) as base:
            t0 = time.perf_counter()
            r = httpx.post(base + "/documents", files=[("file", (pdf.name, data))], timeout=300)
            r.raise_for_status()
            doc_id = r.json()["documents"][0]["doc_id"]
            accepted = time.perf_counter() - t0
            while True:
                answer = httpx.post(base + "/ask", json={"question": "星澜储能实验室拥有多少名研究人员？"},
                                    timeout=60).json()
                if any(c["doc_id"] == doc_id for c in answer["citations"]):
                    break
                time.sleep(0.5)
            answerable = time.perf_counter() - t0
            page = next(c["page"] for c in answer["citations"] if c["doc_id"] == doc_id)
        lines = [
            "# Document intake benchmark",
            "",
            f"Machine: {os.cpu_count()} CPU cores, shared with other work while measured. `python -m tests.bench_documents`.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| text-layer PDF extraction (Chromium-printed, {pages} pages) | {pages / text_s:.1f} pages/s ({text_s:.2f} s) |",
            f"| OCR of scanned pages (A4 at 150 dpi, rendered at 200 dpi, models warm) | {ocr_pages / ocr_s:.2f} pages/s ({ocr_s / ocr_pages:.1f} s/page) |",
            f"| upload of the {pages}-page PDF: accepted (extracted and stored) | {accepted:.1f} s |",
            f"| upload of the {pages}-page PDF to first answer citing it (page {page}) | {answerable:.1f} s |",
            "",
        ]
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text("\n".join(lines), encoding="utf-8")
        print("\n".join(lines))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
