"""Uploading, listing and deleting documents over HTTP, with real files made by real tools.

One real server (its own service, a temp corpus copied from corpus/ and a temp
copy of the index, so nothing is left in the repo) takes each file over
POST /documents, indexes it in the background and swaps the index in; the test
then asks about a fact found only in that file, checks the cited text and
page, deletes the file and checks the fact is gone. Bad files get their 4xx
and leave the documents and the index as they were.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests import docmaker
from tests.conftest import copy_corpus_and_index
from tests.test_browser import artifact, ask, browser, context, wait_replies  # noqa: F401

KEY = "docs-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folders(tmp_path_factory, settings):
    folder = tmp_path_factory.mktemp("documents")
    return copy_corpus_and_index(settings, folder / "corpus", folder / "index")


@pytest.fixture(scope="module")
def server(server_factory, folders):
    corpus, index = folders
    with server_factory(share_service=False, corpus_dir=corpus, index_dir=index, api_key=KEY,
                        max_upload_bytes=2_000_000) as url:
        yield url


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if docmaker.chromium() is None:
        pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
    folder = tmp_path_factory.mktemp("files")
    pdf = docmaker.print_pdf(docmaker.pdf_html("青禾湾园区的星澜储能实验室拥有研究人员412名，实验室主任是顾明远。"),
                             folder)
    scan = docmaker.scanned_pdf(["湖畔科创港区简介", "该港区于2030年正式开园，位于湖畔。",
                                 "云栖镜湖科创港首批入驻企业共有37家，", "其中龙头企业是曜石光电公司。"], folder)
    note = docmaker.docx_file("苍梧溪智能制造基地简介", [
        "苍梧溪智能制造基地位于某地东部，以高端装备为主导产业。",
        "苍梧溪智能制造基地去年的年产值达到58亿元，基地负责人是林振邦。",
    ], folder)
    page = folder / "page.html"
    page.write_text(docmaker.html_page("白鹭洲数字港建设进展", [
        "白鹭洲数字港是一个以数据服务为特色的产业园区，近年来发展迅速，吸引了大批企业入驻。",
        "白鹭洲数字港的数据中心共有标准机柜2600个，今年还将新增机柜800个。",
        "园区还建设了人才公寓和配套商业设施，为入驻企业员工提供便利的生活条件。",
    ]), encoding="utf-8")
    return {"pdf": pdf, "scan": scan, "docx": note, "html": page, "folder": folder}


def _upload(base: str, *paths: Path, headers: dict[str, str] = AUTH) -> httpx.Response:
    return httpx.post(base + "/documents", headers=headers, timeout=120,
                      files=[("file", (p.name, p.read_bytes())) for p in paths])


def _settled(base: str, timeout: float = 600) -> dict:
    """Wait until no build is running and the live index reflects every add and delete."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = httpx.get(base + "/index/status", headers=AUTH, timeout=30).json()
        if not status["running"] and status["pending"] == 0:
            return status
        time.sleep(0.5)
    raise AssertionError(f"index did not settle: {status}")


def _row(base: str, doc_id: str) -> dict | None:
    rows = httpx.get(base + "/documents", headers=AUTH, timeout=30).json()
    return next((r for r in rows if r["doc_id"] == doc_id), None)


def _ask(base: str, question: str) -> dict:
    r = httpx.post(base + "/ask", json={"question": question}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _round_trip(base: str, path: Path, question: str, fact: str, page: int | None, fmt: str) -> dict:
    r = _upload(base, path)
    assert r.status_code == 202, r.text
    (doc,) = r.json()["documents"]
    assert doc["format"] == fmt and doc["status"] in ("queued", "indexing")
    assert doc["path"] == f"uploads/{doc['doc_id']}.{'html' if fmt == 'html' else fmt}"
    _settled(base)
    row = _row(base, doc["doc_id"])
    assert row is not None and row["status"] == "ready", row
    assert row["passages"] >= 1
    answer = _ask(base, question)
    cited = [c for c in answer["citations"] if c["doc_id"] == doc["doc_id"]]
    assert not answer["abstained"] and cited, answer
    cited = [c for c in cited if fact in c["text"]]
    assert cited and fact in answer["answer"], answer
    assert cited[0]["page"] == page
    # The document view has the cited range, on the page the citation names.
    view = httpx.get(base + f"/documents/{doc['doc_id']}", headers=AUTH, timeout=30).json()
    para = next(p for p in view["paragraphs"] if p["start"] <= cited[0]["start"] < p["end"] + 1)
    assert para["page"] == page
    # Delete: gone from the list and from the answers.
    r = httpx.delete(base + f"/documents/{doc['doc_id']}", headers=AUTH, timeout=30)
    assert r.status_code == 202, r.text
    _settled(base)
    assert _row(base, doc["doc_id"]) is None
    after = _ask(base, question)
    assert all(c["doc_id"] != doc["doc_id"] for c in after["citations"])
    assert fact not in after["answer"]
    return row


def test_pdf_printed_by_chromium(server, files):
    row = _round_trip(server, files["pdf"], "星澜储能实验室拥有多少名研究人员？", "412", 2, "pdf")
    assert row["pages"] == 2 and row["ocr_pages"] == 0
    assert row["title"] == "青禾湾园区发展简报"


def test_scanned_pdf_is_read_by_ocr(server, files):
    row = _round_trip(server, files["scan"], "云栖镜湖科创港首批入驻企业有多少家？", "37", 1, "pdf")
    assert row["ocr_pages"] == 1


def test_docx(server, files):
    _round_trip(server, files["docx"], "苍梧溪智能制造基地的年产值是多少？", "58亿元", None, "docx")


def test_html_main_text_only(server, files):
    r = _upload(server, files["html"])
    assert r.status_code == 202, r.text
    doc_id = r.json()["documents"][0]["doc_id"]
    _settled(server)
    text = httpx.get(server + f"/documents/{doc_id}", headers=AUTH, timeout=30).json()["text"]
    assert "2600" in text and "备案号" not in text and "栏目3" not in text
    httpx.delete(server + f"/documents/{doc_id}", headers=AUTH, timeout=30)
    _settled(server)
    _round_trip(server, files["html"], "白鹭洲数字港的数据中心有多少个标准机柜？", "2600", None, "html")


def test_upload_and_delete_need_the_key(server, files):
    assert _upload(server, files["docx"], headers={}).status_code == 401
    assert httpx.delete(server + "/documents/up-000000000000", timeout=30).status_code == 401
    assert httpx.delete(server + "/documents/up-000000000000", headers=AUTH, timeout=30).status_code == 404


def _bad_files(files: dict) -> list[tuple[str, bytes, int, str]]:
    folder: Path = files["folder"]
    from pypdf import PdfWriter

    blank = PdfWriter()
    blank.add_blank_page(595, 842)
    blank_path = folder / "blank.pdf"
    with blank_path.open("wb") as fh:
        blank.write(fh)
    empty_docx = docmaker.docx_file("", [], folder, "empty")
    pdf_bytes = files["pdf"].read_bytes()
    return [
        ("locked.pdf", docmaker.encrypted_pdf(files["pdf"], folder).read_bytes(), 422, "encrypted"),
        ("broken.pdf", pdf_bytes[: len(pdf_bytes) // 3], 422, "broken"),
        ("garbage.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 20, 422, "broken"),
        ("report.pdf", files["html"].read_bytes(), 415, "content is HTML"),
        ("photo.docx", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, 415, "accepted formats"),
        ("blank.pdf", blank_path.read_bytes(), 422, "no text"),
        ("empty.docx", empty_docx.read_bytes(), 422, "no text"),
        ("empty.txt", b"", 422, "empty"),
        ("huge.txt", "大".encode() * 700_000, 413, "size limit"),
        ("bomb.docx", docmaker.zip_bomb_docx(files["docx"], folder).read_bytes(), 413, "decompression bomb"),
    ]


def test_bad_files_get_4xx_and_change_nothing(server, files):
    before_docs = httpx.get(server + "/documents", headers=AUTH, timeout=30).json()
    before_index = _settled(server)["index"]
    for name, data, status, reason in _bad_files(files):
        r = httpx.post(server + "/documents", headers=AUTH, timeout=120, files=[("file", (name, data))])
        assert r.status_code == status, (name, r.status_code, r.text)
        assert name in r.json()["detail"] and reason in r.json()["detail"], (name, r.text)
    # A good file beside a bad one: the request is refused whole.
    r = httpx.post(server + "/documents", headers=AUTH, timeout=120,
                   files=[("file", ("ok.docx", files["docx"].read_bytes())), ("file", ("empty.txt", b""))])
    assert r.status_code == 422 and "empty.txt" in r.json()["detail"]
    assert httpx.get(server + "/documents", headers=AUTH, timeout=30).json() == before_docs
    assert _settled(server)["index"] == before_index


@pytest.mark.browser
def test_page_upload_cite_page_and_delete(server, files, context):  # noqa: F811
    """The documents page in Chromium: upload by button, watch it become ready, ask in the chat page
    (the citation names page 2 of the PDF), drop a bad file (its error is shown), delete with confirm."""
    context.add_init_script(f"localStorage.setItem('hzrag.apiKey', '{KEY}')")
    page = context.new_page()
    page.goto(server + "/static/documents.html")
    page.locator("#doc-rows tr").first.wait_for()
    before = page.locator("#doc-rows tr").count()
    page.locator("#file-input").set_input_files(str(files["pdf"]))
    row = page.locator("#doc-rows tr", has_text="brief.pdf")
    row.wait_for(timeout=60_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#doc-rows tr')].some(tr => tr.textContent.includes('brief.pdf')"
        " && tr.querySelector('.st-ready'))", timeout=600_000)
    _settled(server)
    page.reload()
    page.locator("#doc-rows tr .st-ready", has_text="可用").first.wait_for()
    page.screenshot(path=artifact("documents-page.png"), full_page=True)

    chat = context.new_page()
    chat.goto(server + "/")
    ask(chat, "星澜储能实验室拥有多少名研究人员？")
    wait_replies(chat, 1)
    reply = chat.locator(".msg.assistant").last
    assert "第 2 页" in reply.inner_text(), reply.inner_text()
    reply.locator("button.cite").first.click()
    reply.locator(".passage mark").first.wait_for()
    assert "412" in reply.inner_text()
    chat.screenshot(path=artifact("pdf-citation.png"), full_page=True)
    # The whole document: page marks, the cited sentence highlighted after the mark of page 2.
    with context.expect_page() as opened:
        reply.locator(".passage a.open-doc").first.click()
    docpage = opened.value
    docpage.locator(".doc-body mark").first.wait_for()
    assert docpage.locator(".page-mark").all_inner_texts() == ["— 第 1 页 —", "— 第 2 页 —"]
    assert docpage.evaluate("""() => {
        const marks = [...document.querySelectorAll('.doc-body .page-mark, .doc-body mark')];
        return marks.map(m => m.tagName === 'MARK' ? 'cited' : m.textContent);
    }""")[:3] == ["— 第 1 页 —", "— 第 2 页 —", "cited"]
    docpage.screenshot(path=artifact("pdf-document.png"))
    docpage.close()

    # Drag and drop: an empty file is refused and the page says why.
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([""], "empty.txt", { type: "text/plain" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
    }""")
    page.locator("#upload-status.error-text").wait_for()
    assert "empty.txt" in page.locator("#upload-status").inner_text()

    page.on("dialog", lambda d: d.accept())
    row.locator("button").click()
    # The row shows as deleting until the rebuilt index is served, then goes (the page polls meanwhile).
    page.wait_for_function(
        "n => document.querySelectorAll('#doc-rows tr').length === n"
        " && !document.querySelector('#doc-rows .st-deleting')"
        " && ![...document.querySelectorAll('#doc-rows tr')].some(tr => tr.textContent.includes('brief.pdf'))",
        arg=before, timeout=600_000)
    assert _settled(server)["pending"] == 0


def test_kill_during_indexing_leaves_the_old_index_then_resumes(folders, files, tmp_path, capsys):
    """`rag add` killed by SIGKILL while it builds: the old index still loads and serves, the upload is
    kept as queued (its record was committed before the build), and the next build makes it ready."""
    import signal
    import subprocess
    import sys

    from rag.config import Settings
    from rag.index import load_index
    from rag.ingest.manager import DocumentManager

    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(folders[0], corpus, ignore=shutil.ignore_patterns("uploads"))
    shutil.copytree(folders[1], index, symlinks=True, ignore=shutil.ignore_patterns(".build.lock"))
    settings = Settings(corpus_dir=corpus, index_dir=index, reload_watch_seconds=0)
    before = os.readlink(index / "current")
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "--corpus-dir", str(corpus), "--index-dir", str(index),
                             "add", str(files["docx"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list((index / "builds").glob("tmp-*")):
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.readlink(index / "current") == before
    load_index(settings)  # the old index is whole
    manager = DocumentManager(settings)
    (row,) = [r for r in manager.documents() if r.name.endswith("note.docx")]
    assert row.status == "queued"
    manager.build()
    (row,) = [r for r in manager.documents() if r.name.endswith("note.docx")]
    assert row.status == "ready"
    data = load_index(settings)
    assert any("58亿元" in d.text for d in data.documents.values() if d.doc_id == row.doc_id)
    assert not list((index / "builds").glob("tmp-*"))

    # `rag documents` lists it; `rag remove` takes it out of the folder and the index.
    from rag.cli import main

    dirs = ["--corpus-dir", str(corpus), "--index-dir", str(index)]
    assert main([*dirs, "documents"]) == 0
    assert row.doc_id in capsys.readouterr().out
    assert main([*dirs, "remove", row.doc_id]) == 0
    assert row.doc_id not in load_index(settings).documents
    assert not list((corpus / "uploads").glob(f"{row.doc_id}*"))
    assert main([*dirs, "remove", row.doc_id]) == 1


def test_recover_clears_an_interrupted_upload(tmp_path, files):
    """A kill during an upload leaves a temp file or a stored file without its record: neither is a document."""
    from rag.ingest.store import DocumentStore, extract

    store = DocumentStore(tmp_path)
    data = files["docx"].read_bytes()
    kept = store.add(data, "note.docx", extract(data, "note.docx", 1 << 20))
    (store.folder / ".up-0123456789ab.json.tmp999").write_bytes(b"{")  # killed while writing the record
    (store.folder / "up-0123456789ab.docx").write_bytes(data)  # killed before the record was written
    assert [r.doc_id for r in store.records()] == [kept.doc_id]
    store.recover()
    assert sorted(p.name for p in store.folder.iterdir()) == sorted([f"{kept.doc_id}.docx", f"{kept.doc_id}.json"])
