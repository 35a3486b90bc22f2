"""The chat page in real headless Chromium (Playwright), against a real server, model and index.

Covers: ask -> answer bubble with [n] markers -> cited passage with <mark> -> whole-document
page with the sentence in view; a follow-up turn; a question the sources do not answer (its
closest passages folded); a 422 shown with the server's message; the API-key prompt on 401;
conversations kept across a reload, switched and deleted; example questions; the copy and stop
buttons; dark mode; the answer streamed when an LLM writes it; phone width. Screenshots go to
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
Q_ELSEWHERE = "巴黎埃菲尔铁塔有多高？"  # a place the articles never mention
PHONE = {"viewport": {"width": 375, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


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
        assert reply.locator(".badge").inner_text() == "未找到"
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
    assert reply.locator(".badge").inner_text() == "未找到"
    assert "没有找到" in reply.locator(".answer").inner_text()
    reply.locator("details.closest summary").click()
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


def reply_ready(page, n: int) -> None:
    """Wait until the n-th assistant reply is fully rendered (its action row is there)."""
    page.wait_for_function("n => document.querySelectorAll('.msg.assistant .actions').length >= n",
                           arg=n, timeout=ANSWER_TIMEOUT)


def answered(page, base_url: str, question: str) -> dict:
    """Open the page, ask ``question``, wait for the rendered reply; the /chat response body."""
    page.goto(base_url + "/")
    with page.expect_response(lambda r: r.url.endswith("/chat")) as resp:
        ask(page, question)
    reply_ready(page, 1)
    return resp.value.json()


def no_horizontal_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] + 1, width


def test_history_survives_reload_and_conversations_switch(base_url, context):
    page = context.new_page()
    page.goto(base_url + "/")
    assert page.locator(".conv").count() == 0
    ask(page, Q_MAIN)
    reply_ready(page, 1)
    first_answer = page.locator(".msg.assistant .answer").first.inner_text()
    assert page.locator(".conv").count() == 1
    assert page.locator(".conv-open").first.inner_text() == Q_MAIN

    # A reload shows the same conversation, citations still clickable.
    page.reload()
    page.locator(".msg.assistant").first.wait_for()
    assert page.locator(".msg.user").first.inner_text() == Q_MAIN
    assert page.locator(".msg.assistant .answer").first.inner_text() == first_answer
    page.locator("button.cite").first.click()
    page.locator(".passage mark").first.wait_for()
    page.screenshot(path=artifact("history_reload.png"), full_page=True)

    # A second conversation; both are listed, the newest first, and each one opens as it was.
    page.locator("#new-chat").click()
    assert page.locator(".msg").count() == 0 and page.locator("#welcome").is_visible()
    ask(page, Q_ABSENT)
    reply_ready(page, 1)
    titles = page.locator(".conv-open").all_inner_texts()
    assert titles == [Q_ABSENT, Q_MAIN]
    page.locator(".conv-open", has_text=Q_MAIN).click()
    assert page.locator(".msg.user").all_inner_texts() == [Q_MAIN]
    assert page.locator(".conv-open[aria-current=true]").inner_text() == Q_MAIN
    # A follow-up in the older conversation sends that conversation's history only.
    with page.expect_request(lambda r: r.url.endswith("/chat") and r.method == "POST") as req:
        ask(page, Q_FOLLOW)
    sent = json.loads(req.value.post_data or "{}")["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [Q_MAIN, Q_FOLLOW]
    reply_ready(page, 2)
    page.screenshot(path=artifact("conversations.png"))

    # Delete the other conversation; after a reload one remains, with its two turns.
    page.locator(".conv", has_text=Q_ABSENT).locator(".conv-delete").click()
    assert page.locator(".conv").count() == 1
    page.reload()
    page.locator(".msg.assistant").nth(1).wait_for()
    assert page.locator(".msg.user").all_inner_texts() == [Q_MAIN, Q_FOLLOW]
    assert page.locator(".conv").count() == 1
    assert context.errors == []


def test_history_at_phone_width(base_url, browser):
    ctx = browser.new_context(**PHONE)
    try:
        page = ctx.new_page()
        page.goto(base_url + "/")
        # The list is folded away at phone width; the menu button opens it.
        assert not page.locator("#convs").is_visible()
        ask(page, Q_MAIN)
        reply_ready(page, 1)
        page.reload()
        page.locator(".msg.assistant").first.wait_for()
        page.locator("#toggle-convs").click()
        page.locator(".conv-open", has_text=Q_MAIN).wait_for(state="visible")
        no_horizontal_scroll(page)
        page.screenshot(path=artifact("phone_conversations.png"))
        page.locator(".conv-open", has_text=Q_MAIN).click()
        page.locator("#convs").wait_for(state="hidden")
        assert page.locator(".msg.user").inner_text() == Q_MAIN
    finally:
        ctx.close()


def test_example_question_asks_and_shows_a_cited_answer(base_url, context, browser):
    page = context.new_page()
    page.goto(base_url + "/")
    examples = page.locator("#welcome button.example")
    assert examples.count() >= 3
    page.screenshot(path=artifact("examples.png"))
    question = examples.first.inner_text()
    with page.expect_response(lambda r: r.url.endswith("/chat")) as resp:
        examples.first.click()
    data = resp.value.json()
    reply_ready(page, 1)
    assert page.locator(".msg.user").inner_text() == question
    reply = page.locator(".msg.assistant").last
    assert not data["abstained"] and data["citations"]
    assert reply.locator("button.cite").count() >= 1
    assert reply.locator(".sources li").count() == len(data["citations"])
    # Confidence in words, with the percentage beside it and in the tooltip.
    p = data["confidence"]
    word = "高" if p >= 0.8 else "中" if p >= 0.5 else "低"
    conf = reply.locator(".confidence")
    assert conf.inner_text().startswith("可信度：" + word)
    assert f"{round(p * 100)}%" in conf.inner_text() and f"{round(p * 100)}%" in conf.get_attribute("title")
    page.screenshot(path=artifact("example_answer.png"), full_page=True)

    ctx = browser.new_context(**PHONE)
    try:
        phone = ctx.new_page()
        phone.goto(base_url + "/")
        phone.locator("button.example").first.wait_for()
        no_horizontal_scroll(phone)
        phone.screenshot(path=artifact("phone_examples.png"))
    finally:
        ctx.close()


def test_copy_button_puts_the_answer_on_the_clipboard(base_url, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"])
    try:
        page = ctx.new_page()
        data = answered(page, base_url, Q_MAIN)
        copy = page.locator(".msg.assistant button.copy")
        assert copy.get_attribute("aria-label") == "复制回答"
        copy.click()
        page.wait_for_function("() => document.querySelector('button.copy').textContent === '已复制'")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied.startswith(data["answer"])
        for cit in data["citations"]:
            assert f"[{cit['id']}] {cit['title']}" in copied
        page.screenshot(path=artifact("copied.png"))
    finally:
        ctx.close()


def test_stop_button_cancels_the_question(base_url, context):
    page = context.new_page()
    page.goto(base_url + "/")
    held = []
    page.route("**/chat", lambda route: held.append(route))  # never answered: the request hangs
    ask(page, Q_MAIN)
    stop = page.locator("#stop")
    stop.wait_for(state="visible")
    assert not page.locator("#send").is_visible()
    assert stop.get_attribute("aria-label") == "停止回答"
    page.screenshot(path=artifact("waiting.png"))
    stop.click()
    page.locator(".msg.stopped").wait_for()
    assert page.locator("#send").is_visible() and not stop.is_visible()
    assert page.locator(".msg.loading").count() == 0
    assert page.locator("#question").input_value() == Q_MAIN  # back in the box to edit or resend
    page.screenshot(path=artifact("stopped.png"))
    # The stopped question is no conversation: nothing is kept after a reload.
    page.unroute("**/chat")
    page.reload()
    assert page.locator(".msg").count() == 0 and page.locator(".conv").count() == 0


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_colours_follow_the_system_setting(base_url, browser, scheme):
    def luminance(css: str) -> float:
        r, g, b = (int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    for name, options in (("desktop", {"viewport": {"width": 1280, "height": 900}}), ("phone", PHONE)):
        ctx = browser.new_context(color_scheme=scheme, **options)
        try:
            page = ctx.new_page()
            page.goto(base_url + "/")
            ask(page, Q_MAIN)
            reply_ready(page, 1)
            body = page.evaluate("getComputedStyle(document.body).backgroundColor")
            bubble = page.evaluate("getComputedStyle(document.querySelector('.msg.assistant')).backgroundColor")
            text = page.evaluate("getComputedStyle(document.querySelector('.msg.assistant .answer')).color")
            if scheme == "dark":
                assert luminance(body) < 0.2 and luminance(bubble) < 0.25 and luminance(text) > 0.7
            else:
                assert luminance(body) > 0.9 and luminance(text) < 0.3
            page.screenshot(path=artifact(f"{scheme}_{name}.png"))
        finally:
            ctx.close()


def test_not_found_is_one_line_with_passages_folded(base_url, context, browser):
    page = context.new_page()
    data = answered(page, base_url, Q_ELSEWHERE)
    assert data["abstained"] and data["hits"]
    reply = page.locator(".msg.assistant.abstained")
    line = reply.locator(".notfound-line")
    assert line.locator(".badge").inner_text() == "未找到"
    assert line.locator(".answer").inner_text() == data["answer"]
    height = line.bounding_box()["height"]
    line_height = float(page.evaluate("parseFloat(getComputedStyle(document.querySelector('.notfound-line .answer')).lineHeight)"))
    assert height <= 1.5 * line_height, (height, line_height)  # one line at desktop width
    folded = reply.locator("details.closest")
    assert folded.get_attribute("open") is None
    assert not reply.locator(".suggestions").is_visible()
    assert str(len(data["hits"])) in folded.locator("summary").inner_text()
    page.screenshot(path=artifact("not_found_folded.png"))

    folded.locator("summary").click()
    items = reply.locator(".suggestions li")
    items.first.wait_for(state="visible")
    assert items.count() == len(data["hits"])
    for i, hit in enumerate(data["hits"]):
        assert items.nth(i).locator(".hit-title").inner_text() == hit["title"]
        assert items.nth(i).locator("a.open-doc").get_attribute("href").startswith(
            f"/static/doc.html?doc={hit['doc_id']}&")
    page.screenshot(path=artifact("not_found_open.png"), full_page=True)

    ctx = browser.new_context(**PHONE)
    try:
        phone = ctx.new_page()
        phone.goto(base_url + "/")
        ask(phone, Q_ELSEWHERE)
        reply_ready(phone, 1)
        phone.locator("details.closest summary").click()
        no_horizontal_scroll(phone)
        phone.screenshot(path=artifact("phone_not_found.png"), full_page=True)
    finally:
        ctx.close()


def test_document_header_stays_in_view(base_url, context):
    page = context.new_page()
    doc_id = httpx.get(base_url + "/documents", timeout=30).json()[2]["doc_id"]
    page.goto(f"{base_url}/static/doc.html?doc={doc_id}")
    page.locator(".doc-body .para").nth(50).wait_for()
    page.mouse.wheel(0, 5000)
    page.wait_for_function("scrollY > 2000")
    box = page.locator("header.top").bounding_box()
    assert box and box["y"] == 0
    assert page.locator("header.top a.button").is_visible()
    page.screenshot(path=artifact("document_scrolled.png"))


def test_answer_streams_when_an_llm_writes_it(browser):
    """A real stand-in LLM server (tests/test_llm.py) writes the answer; the page streams it from /v1."""
    from conftest import run_server
    from test_llm import QUESTION, StubLlm, llm_settings

    from api.app import create_app
    from rag.service import RagService

    stub = StubLlm()
    try:
        svc = RagService(llm_settings(stub.base, llm_timeout=20))
        svc.warm_up()
        stub.set(reply="主攻半导体的是江东芯谷[1]。")
        with run_server(create_app(svc.settings, service=svc)) as base:
            assert httpx.get(base + "/health", timeout=10).json()["llm"] is True
            for name, options in (("desktop", {"viewport": {"width": 1280, "height": 900}}), ("phone", PHONE)):
                ctx = browser.new_context(**options)
                try:
                    page = ctx.new_page()
                    chats = []
                    page.on("request", lambda r, seen=chats: seen.append(r.url) if r.url.endswith("/chat") else None)
                    page.goto(base + "/")
                    page.wait_for_function("llmStreams === true")
                    # Record the bubble showing the text while it arrives.
                    page.evaluate("""() => { window.sawStreaming = false;
                        new MutationObserver(() => { if (document.querySelector('.msg.streaming .answer')?.textContent)
                          window.sawStreaming = true; }).observe(document.getElementById('log'),
                          {subtree: true, childList: true, characterData: true, attributes: true}); }""")
                    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as req:
                        ask(page, QUESTION)
                    body = json.loads(req.value.post_data or "{}")
                    assert body["stream"] is True and body["messages"][-1] == {"role": "user", "content": QUESTION}
                    reply_ready(page, 1)
                    reply = page.locator(".msg.assistant").last
                    assert reply.locator(".answer").inner_text() == "主攻半导体的是江东芯谷[1]。"
                    assert "来源" not in reply.locator(".answer").inner_text()
                    assert reply.locator("button.cite").count() == 1
                    assert reply.locator(".sources li").count() == 1
                    assert page.evaluate("window.sawStreaming") is True
                    assert chats == []
                    page.screenshot(path=artifact(f"streamed_{name}.png"))
                finally:
                    ctx.close()
    finally:
        stub.close()
