"""The chat page in real headless Chromium (Playwright), against a real server, model and index.

Covers: ask -> answer bubble with [n] markers -> cited passage with <mark> -> whole-document
page with the sentence in view; a follow-up turn; a question the sources do not answer; a 422
shown with the server's message; the API-key prompt on 401; phone width. Screenshots go to
tests/artifacts/. Uses Debian's /usr/bin/chromium; never downloads a browser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ANSWER_TIMEOUT = 60_000  # ms; the first answer may still warm caches

Q_MAIN = "钱塘新区哪个产业平台主攻半导体产业？"
Q_FOLLOW = "它的总面积是多少？"
Q_ABSENT = "杭州综保区的海关关区代码是多少？"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run should have installed Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser):
    """A fresh profile (empty localStorage) that records page errors and off-host requests."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    ctx.set_default_timeout(15_000)
    ctx.errors = []  # type: ignore[attr-defined]
    ctx.urls = []  # type: ignore[attr-defined]
    ctx.on("page", lambda p: p.on("pageerror", lambda e: ctx.errors.append(str(e))))
    ctx.on("request", lambda r: ctx.urls.append(r.url))
    yield ctx
    ctx.close()


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / name)


def ask(page, question: str) -> None:
    """Type into the box and press Enter (the page sends on Enter)."""
    box = page.locator("#question")
    box.fill(question)
    box.press("Enter")


def wait_replies(page, n: int) -> None:
    """Wait until the n-th assistant reply (answer, not-found or error) is on the page."""
    page.wait_for_function(
        "n => document.querySelectorAll('.msg.assistant:not(.loading)').length >= n"
        " && !document.querySelector('.msg.loading')",
        arg=n, timeout=ANSWER_TIMEOUT)


def test_chat_citation_document_followup(base_url, context):
    page = context.new_page()
    page.goto(base_url + "/")
    assert page.locator("h1").inner_text().strip()
    assert not page.locator("#key-bar").is_visible()

    # Shift+Enter is a newline, not a send.
    page.locator("#question").press_sequentially("第一行")
    page.locator("#question").press("Shift+Enter")
    assert "\n" in page.locator("#question").input_value()
    assert page.locator(".msg").count() == 0

    ask(page, Q_MAIN)
    assert page.locator("#question").input_value() == ""
    page.locator(".msg.user").first.wait_for()
    # The spinner shows while the server works (may already be gone on a fast machine).
    wait_replies(page, 1)
    reply = page.locator(".msg.assistant").last
    assert "error" not in (reply.get_attribute("class") or "")
    markers = reply.locator("button.cite")
    assert markers.count() >= 1, reply.inner_text()
    assert markers.first.inner_text().strip() == "[1]"
    page.screenshot(path=artifact("chat.png"), full_page=True)

    # Click [1]: the cited paragraph(s) with the sentence in a <mark>.
    markers.first.click()
    mark = reply.locator(".passage mark").first
    mark.wait_for()
    cited = mark.inner_text().strip()
    assert cited
    page.screenshot(path=artifact("citation.png"), full_page=True)

    # The marked text is in the document the link points to.
    link = reply.locator(".passage a.open-doc")
    href = link.get_attribute("href")
    assert href and href.startswith("/static/doc.html?")
    doc_id = dict(p.split("=", 1) for p in href.split("?", 1)[1].split("&"))["doc"]
    doc = httpx.get(f"{base_url}/documents/{doc_id}", timeout=30).json()
    assert cited in doc["text"]

    # "打开全文" opens the whole document with the same sentence highlighted and in view.
    with context.expect_page() as new_page:
        link.click()
    docpage = new_page.value
    docpage.wait_for_load_state()
    dmark = docpage.locator(".doc-body mark").first
    dmark.wait_for()
    assert dmark.inner_text().strip() == cited
    docpage.wait_for_function(
        "() => { const r = document.querySelector('.doc-body mark').getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= innerHeight; }")
    assert docpage.locator(".doc-body .para").count() == len(doc["paragraphs"])
    docpage.screenshot(path=artifact("document.png"))
    docpage.close()

    # A follow-up turn: the whole history is posted, a second answer appears.
    with page.expect_request(lambda r: r.url.endswith("/chat") and r.method == "POST") as req:
        ask(page, Q_FOLLOW)
    sent = json.loads(req.value.post_data or "{}")["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == Q_MAIN and sent[2]["content"] == Q_FOLLOW
    wait_replies(page, 2)
    second = page.locator(".msg.assistant").nth(1)
    assert "error" not in (second.get_attribute("class") or "")
    assert second.locator(".answer").inner_text().strip()

    # "新对话" clears the page and the history.
    page.locator("#new-chat").click()
    assert page.locator(".msg").count() == 0
    with page.expect_request(lambda r: r.url.endswith("/chat") and r.method == "POST") as req:
        ask(page, Q_MAIN)
    assert len(json.loads(req.value.post_data or "{}")["messages"]) == 1
    wait_replies(page, 1)

    assert context.errors == []
    assert all(u.startswith(base_url) or u.startswith("about:") for u in context.urls), context.urls


def test_absent_answer(base_url, context):
    page = context.new_page()
    page.goto(base_url + "/")
    ask(page, Q_ABSENT)
    wait_replies(page, 1)
    reply = page.locator(".msg.assistant").last
    classes = reply.get_attribute("class") or ""
    assert "error" not in classes
    if "abstained" in classes:
        assert reply.locator(".badge").inner_text() == "资料中未找到答案"
    else:
        assert reply.locator(".answer").inner_text().strip()
    page.screenshot(path=artifact("absent.png"), full_page=True)

    # The service may answer that question; check the not-found rendering with the same real
    # response forced to abstained=true: the answer text plus the closest passages as links.
    def force_abstain(route):
        body = route.fetch().json()
        body.update(abstained=True, citations=[], answer="资料中没有找到这个问题的答案。<b>[9]</b>")
        body["hits"][0]["title"] = '<img src=x onerror="window.pwned=1">标题'
        route.fulfill(json=body)

    page.route("**/chat", force_abstain)
    page.locator("#new-chat").click()
    ask(page, Q_ABSENT)
    wait_replies(page, 1)
    reply = page.locator(".msg.assistant.abstained").last
    assert reply.locator(".badge").inner_text() == "资料中未找到答案"
    assert "没有找到" in reply.locator(".answer").inner_text()
    hits = reply.locator(".suggestions li")
    assert hits.count() >= 1
    assert hits.first.locator("a.open-doc").get_attribute("href").startswith("/static/doc.html?doc=")
    # Server text is inserted as text, never as markup.
    assert "<b>[9]</b>" in reply.locator(".answer").inner_text()
    assert reply.locator(".answer b, .answer button.cite, .suggestions img").count() == 0
    assert "<img" in hits.first.locator(".hit-title").inner_text()
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=artifact("not_found.png"), full_page=True)
    assert context.errors == []


def test_errors_shown(base_url, context):
    page = context.new_page()
    page.goto(base_url + "/")
    # Over-long question: the server's 422 message is shown, the text is kept to edit.
    long_q = "杭" * 1001
    page.locator("#question").fill(long_q)
    page.locator("#send").click()
    err = page.locator(".msg.error")
    err.wait_for()
    assert "422" in err.inner_text()
    assert "最多 1000 个字符" in err.inner_text()
    assert page.locator("#question").input_value() == long_q
    page.screenshot(path=artifact("error.png"))

    # Network failure: a readable message, and the send button is usable again.
    page.route("**/chat", lambda route: route.abort())
    page.locator("#question").fill(Q_MAIN)
    page.locator("#send").click()
    page.locator(".msg.error").nth(1).wait_for()
    assert "网络错误" in page.locator(".msg.error").nth(1).inner_text()
    assert page.locator("#send").is_enabled()
    assert context.errors == []


def test_api_key_prompt(server_factory, browser):
    with server_factory(api_key="browser-test-key") as url:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.goto(url + "/")
            assert not page.locator("#key-bar").is_visible()
            ask(page, Q_MAIN)
            page.locator(".msg.error").wait_for()
            assert "401" in page.locator(".msg.error").inner_text()
            assert page.locator("#key-bar").is_visible()
            page.locator("#key-input").fill("browser-test-key")
            with page.expect_request(lambda r: r.url.endswith("/chat")) as req:
                page.locator("#key-bar button").click()
            assert req.value.headers.get("authorization") == "Bearer browser-test-key"
            page.locator(".msg.assistant:not(.error):not(.loading)").wait_for(timeout=ANSWER_TIMEOUT)
            assert page.evaluate("localStorage.getItem('hzrag.apiKey')") == "browser-test-key"
            assert not page.locator("#key-bar").is_visible()
            # The stored key also opens citations and the document page.
            page.locator("button.cite").first.click()
            page.locator(".passage mark").first.wait_for()
        finally:
            ctx.close()


def test_phone_width(base_url, browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                              is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        page.goto(base_url + "/")
        ask(page, Q_MAIN)
        wait_replies(page, 1)
        page.locator("button.cite").first.click()
        page.locator(".passage mark").first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, width
        box = page.locator("#send").bounding_box()
        assert box and box["x"] + box["width"] <= 390
        page.screenshot(path=artifact("phone.png"))
        link = page.locator(".passage a.open-doc")
        with ctx.expect_page() as new_page:
            link.click()
        doc = new_page.value
        doc.locator(".doc-body mark").first.wait_for()
        assert doc.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        doc.screenshot(path=artifact("phone_document.png"))
    finally:
        ctx.close()
