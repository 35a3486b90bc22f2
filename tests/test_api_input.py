"""Bad input gets a clear 4xx that names what is wrong; odd but valid input gets an answer.

Every request goes over real HTTP to a real server (the shared ``base_url``
server over the real model and index). No response may be a 5xx. What people
type (emoji, zero-width and control characters, other scripts) is normalised and
answered; only text that is empty once normalised, or too long, is refused.
Errors on /v1/* come in OpenAI's shape (``{"error": {...}}``).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from rag import lang

# --- helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c


def detail_text(resp: httpx.Response) -> str:
    """The error as one string: FastAPI's ``detail`` (a string or a list of errors), or on
    /v1/* OpenAI's ``error`` object (message, type, param, code), whose shape is checked here."""
    body = resp.json()
    if resp.request.url.path.startswith("/v1/"):
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        return json.dumps(error, ensure_ascii=False)
    assert "detail" in body, body
    detail = body["detail"]
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)


def assert_rejected(resp: httpx.Response, status: int, *needles: str) -> str:
    """``status`` with a JSON detail that contains every needle (case-insensitive)."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json")
    text = detail_text(resp)
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in detail: {text[:500]}"
    return text


# Each answering endpoint with how to put one user text into its body, and the
# name its error messages use for that text.
Body = Callable[[Any], dict[str, Any]]
ENDPOINTS: dict[str, tuple[str, Body, str]] = {
    "ask": ("/ask", lambda t: {"question": t}, "question"),
    "search": ("/search", lambda t: {"query": t}, "query"),
    "chat": ("/chat", lambda t: {"messages": [{"role": "user", "content": t}]}, "user message"),
    "openai": (
        "/v1/chat/completions",
        lambda t: {"model": "hz-rag", "messages": [{"role": "user", "content": t}]},
        "user message",
    ),
}
ALL = list(ENDPOINTS)
WITH_TOP_K = ["ask", "search", "chat"]  # the OpenAI endpoint has no top_k
STRICT = ["ask", "search", "chat"]  # unknown fields rejected (the OpenAI one ignores client knobs)


def post(client: httpx.Client, endpoint: str, text: Any, **extra: Any) -> httpx.Response:
    path, body, _ = ENDPOINTS[endpoint]
    return client.post(path, json={**body(text), **extra})


MARKER = re.compile(r"\[(\d+)\]")


def assert_answer_or_abstention(resp: httpx.Response, endpoint: str) -> None:
    """200 with a well-formed answer: cited, or an explicit abstention."""
    assert resp.status_code == 200, (resp.status_code, resp.text[:500])
    body = resp.json()
    if endpoint == "search":
        assert isinstance(body["hits"], list)
        for hit in body["hits"]:
            assert hit["text"] and hit["doc_id"]
        return
    if endpoint == "openai":
        assert body["object"] == "chat.completion"
        content = body["choices"][0]["message"]["content"]
        assert isinstance(content, str) and content.strip()
        assert isinstance(body["abstained"], bool)
        if not body["abstained"]:
            assert body["citations"]
        return
    assert isinstance(body["answer"], str) and body["answer"].strip()
    assert isinstance(body["abstained"], bool)
    assert isinstance(body["confidence"], int | float)
    if body["abstained"]:
        return
    ids = {c["id"] for c in body["citations"]}
    assert ids, body
    for marker in MARKER.findall(body["answer"]):
        assert int(marker) in ids, (marker, ids)
    for c in body["citations"]:
        assert c["text"] and c["doc_id"] and 0 <= c["start"] < c["end"]


# --- the text itself ------------------------------------------------------------


EMPTY = "问题为空"


@pytest.mark.parametrize("endpoint", ALL)
@pytest.mark.parametrize(
    "text",
    ["", "   \t\n ", "🏭🏭🏭", "\u200b\x00\ufeff", "👍\u200d👍 \x07"],
    ids=["empty", "whitespace", "only-emoji", "only-invisible", "emoji-and-control"],
)
def test_text_empty_once_normalised_is_422_in_chinese(client, endpoint, text):
    resp = post(client, endpoint, text)
    msg = assert_rejected(resp, 422, EMPTY)
    field = {"ask": "question", "search": "query"}.get(endpoint, "messages")
    assert field in msg, msg


# What people paste or type: each is normalised and answered. ``shown`` is the question
# the answer carries back (the user's text minus invisible characters).
TYPED = [
    ("钱塘新区\x00在哪里", "钱塘新区在哪里"),
    ("钱塘新区\x07在哪里", "钱塘新区在哪里"),
    ("钱塘新区在哪里\x1b[31m", "钱塘新区在哪里[31m"),
    ("谢谢👍 钱塘新区在哪里😀", "谢谢👍 钱塘新区在哪里😀"),
    ("钱塘新区的主导产业是什么☀", "钱塘新区的主导产业是什么☀"),
    ("钱塘新区в哪里", "钱塘新区в哪里"),
    ("Hаngzhou 综保区", "Hаngzhou 综保区"),
    ("钱塘新区في哪里", "钱塘新区في哪里"),
    ("π是多少", "π是多少"),
    ("杭州の医薬港はどこですか", "杭州の医薬港はどこですか"),
    ("钱塘\u200b新区在哪里", "钱塘新区在哪里"),
    ("钱塘\u200d新区在哪里", "钱塘新区在哪里"),
    ("钱塘新区\u202e在哪里", "钱塘新区在哪里"),
    ("\ufeff钱塘新区在哪里", "钱塘新区在哪里"),
    ("钱塘新区\ue000在哪里", "钱塘新区在哪里"),
]


@pytest.mark.parametrize("endpoint", ALL)
@pytest.mark.parametrize(("text", "shown"), TYPED,
                         ids=["nul", "bell", "ansi-escape", "emoji", "pictograph", "cyrillic", "cyrillic-spoof",
                              "arabic", "greek", "kana", "zwsp", "zwj", "rlo", "bom", "private-use"])
def test_typed_text_is_normalised_and_answered(client, endpoint, text, shown):
    resp = post(client, endpoint, text)
    assert_answer_or_abstention(resp, endpoint)
    if endpoint in ("ask", "chat"):
        assert resp.json()["question"] == shown


def test_invisible_characters_do_not_change_the_answer(client):
    plain = post(client, "ask", "杭州综合保税区获批于哪一年？").json()
    pasted = post(client, "ask", "\ufeff杭州\u200b综合保税区获批于\x07哪一年？😀").json()
    assert not plain["abstained"]
    assert (pasted["answer"], pasted["citations"]) == (plain["answer"], plain["citations"])


@pytest.mark.parametrize("endpoint", ALL)
def test_question_over_1000_chars_is_422(client, endpoint):
    text = "钱塘新区" * 250 + "？"  # 1,001 characters
    assert len(text) == 1001
    msg = assert_rejected(post(client, endpoint, text), 422, "问题过长", "1000")
    assert {"ask": "question", "search": "query"}.get(endpoint, "messages") in msg


def test_question_limit_is_the_setting(server_factory):
    """RAG_MAX_QUESTION_CHARS is the one limit (counted on the text once invisible characters go)."""
    # Its own service: the limit is the service's setting, and the shared one has the default.
    with server_factory(share_service=False, max_question_chars=20) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        for endpoint in ALL:
            assert_rejected(post(c, endpoint, "杭" * 21), 422, "最多 20 个字符")
            assert_answer_or_abstention(post(c, endpoint, "杭" * 20 + "\u200b" * 5), endpoint)


@pytest.mark.parametrize("endpoint", ALL)
def test_question_of_exactly_1000_chars_is_accepted(client, endpoint):
    text = ("杭州综合保税区获批于哪一年" * 80)[:999] + "？"
    assert len(text) == 1000
    assert_answer_or_abstention(post(client, endpoint, text), endpoint)


@pytest.mark.parametrize("endpoint", ALL)
@pytest.mark.parametrize("value", [123, 1.5, ["钱塘新区在哪里"], {"text": "钱塘新区"}, True],
                         ids=["int", "float", "list", "object", "bool"])
def test_question_of_wrong_type_is_422(client, endpoint, value):
    resp = post(client, endpoint, value)
    if endpoint == "openai" and isinstance(value, list):
        # OpenAI content may be a list of parts; a bare string inside is not a part.
        assert_rejected(resp, 422, "content")
        return
    _, _, name = ENDPOINTS[endpoint]
    field = {"ask": "question", "search": "query"}.get(endpoint, "content")
    assert_rejected(resp, 422, field, "valid string")


# --- top_k and mode ---------------------------------------------------------------


@pytest.mark.parametrize("endpoint", WITH_TOP_K)
@pytest.mark.parametrize(
    ("top_k", "needles"),
    [
        (0, ("greater than or equal to 1",)),
        (-3, ("greater than or equal to 1",)),
        (21, ("less than or equal to 20",)),
        (10**12, ("less than or equal to 20",)),
        ("abc", ("valid integer",)),
        (1.5, ("valid integer", "fractional")),
        ([5], ("valid integer",)),
    ],
    ids=["zero", "negative", "21", "huge", "string", "fraction", "list"],
)
def test_bad_top_k_is_422(client, endpoint, top_k, needles):
    resp = post(client, endpoint, "钱塘新区在哪里？", top_k=top_k)
    assert_rejected(resp, 422, "top_k", *needles)


@pytest.mark.parametrize("endpoint", WITH_TOP_K)
@pytest.mark.parametrize("top_k", [1, 20])
def test_top_k_bounds_are_accepted(client, endpoint, top_k):
    resp = post(client, endpoint, "杭州综合保税区获批于哪一年？", top_k=top_k)
    assert_answer_or_abstention(resp, endpoint)
    hits = resp.json()["hits"]
    assert 1 <= len(hits) <= top_k


@pytest.mark.parametrize("endpoint", WITH_TOP_K)
def test_unknown_mode_is_422(client, endpoint):
    resp = post(client, endpoint, "钱塘新区在哪里？", mode="magic")
    assert_rejected(resp, 422, "mode", "hybrid")


# --- body shape -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ALL)
@pytest.mark.parametrize(
    "raw",
    [b'{"question": ', b"not json at all", b'{"question": "x",}', b"\xff\xfe\x00{", b"[1, 2"],
    ids=["truncated", "text", "trailing-comma", "binary", "open-array"],
)
def test_invalid_json_is_422(client, endpoint, raw):
    path = ENDPOINTS[endpoint][0]
    resp = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_rejected(resp, 422, "json")


@pytest.mark.parametrize("endpoint", ALL)
def test_body_that_is_not_utf8_is_400(client, endpoint):
    path, body, _ = ENDPOINTS[endpoint]
    raw = json.dumps(body("钱塘新区PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"\xff\xfe\xc0")
    resp = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_rejected(resp, 400, "parsing the body")


@pytest.mark.parametrize("endpoint", ALL)
@pytest.mark.parametrize("raw", [b"\\ud800", b"\xed\xa0\x80"], ids=["escaped", "utf8-encoded"])
def test_lone_surrogate_is_dropped_or_rejected(client, endpoint, raw):
    """JSON may smuggle in a lone surrogate (U+D800), which is no character at all: it is dropped
    like any invisible character, or (where the JSON layer refuses it) a 422 names the field."""
    path, body, _ = ENDPOINTS[endpoint]
    payload = json.dumps(body("钱塘新区PLACEHOLDER在哪里")).encode().replace(b"PLACEHOLDER", raw)
    resp = client.post(path, content=payload, headers={"content-type": "application/json"})
    if resp.status_code == 422:
        text = assert_rejected(resp, 422, "unicode string")
        assert {"ask": "question", "search": "query"}.get(endpoint, "messages") in text
        return
    assert_answer_or_abstention(resp, endpoint)
    if endpoint == "ask":
        assert resp.json()["question"] == "钱塘新区在哪里"


@pytest.mark.parametrize("endpoint", ALL)
def test_json_that_is_not_an_object_is_422(client, endpoint):
    path = ENDPOINTS[endpoint][0]
    for body in ([], "钱塘新区", 42, None):
        resp = client.post(path, json=body)
        assert_rejected(resp, 422, "body")


@pytest.mark.parametrize("endpoint", ALL)
def test_form_encoded_body_is_422(client, endpoint):
    path = ENDPOINTS[endpoint][0]
    resp = client.post(path, data={"question": "钱塘新区在哪里"})
    assert 400 <= resp.status_code < 500, resp.text
    assert detail_text(resp)


@pytest.mark.parametrize("endpoint", ALL)
def test_body_over_64_kib_is_413(client, endpoint):
    path, body, _ = ENDPOINTS[endpoint]
    big = body("钱塘新区在哪里？") | {"padding": "x" * (64 * 1024 + 1)}
    resp = client.post(path, json=big)
    assert_rejected(resp, 413, "too large", "65536")


@pytest.mark.parametrize("endpoint", ["ask", "openai"])
def test_chunked_body_over_64_kib_is_413(client, endpoint):
    """No Content-Length (chunked upload): the limit still holds."""
    path, body, _ = ENDPOINTS[endpoint]
    payload = json.dumps(body("钱塘新区在哪里？") | {"padding": "x" * 100_000}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    resp = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert_rejected(resp, 413, "too large")


def test_body_just_under_the_limit_is_not_413(client):
    """A big but allowed body reaches validation (and gets its 422 for the long question)."""
    resp = client.post("/ask", json={"question": "杭" * 20_000})  # 60 kB of UTF-8
    assert len(json.dumps({"question": "杭" * 20_000}, ensure_ascii=False).encode()) < 64 * 1024
    assert_rejected(resp, 422, "question", "1000")


def raw_request(base_url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes httpx refuses to send (a lying Content-Length); return status and body."""
    url = httpx.URL(base_url)
    with socket.create_connection((url.host, url.port), timeout=60) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                headers, _, rest = data.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", headers, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def test_declared_content_length_over_the_limit_is_413_before_reading(base_url):
    """A client announcing a huge body is turned away without the server waiting for it."""
    head = ("POST /ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 999999999\r\nConnection: close\r\n")
    status, body = raw_request(base_url, head, b'{"question": "x"}')
    assert status == 413
    assert b"too large" in body


def test_malformed_content_length_is_400(base_url):
    head = ("POST /ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: lots\r\nConnection: close\r\n")
    status, _ = raw_request(base_url, head, b'{"question": "x"}')
    assert 400 <= status < 500


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("ask", {}, "question"),
        ("ask", {"top_k": 3}, "question"),
        ("search", {"question": "钱塘新区"}, "query"),  # the field /ask uses is not /search's
        ("chat", {}, "messages"),
        ("chat", {"messages": [{"role": "user"}]}, "content"),
        ("chat", {"messages": [{"content": "钱塘新区在哪里"}]}, "role"),
        ("openai", {}, "messages"),
        ("openai", {"model": "hz-rag"}, "messages"),
        ("openai", {"messages": [{"content": "钱塘新区在哪里"}]}, "role"),
    ],
)
def test_missing_field_is_422(client, endpoint, body, field):
    resp = client.post(ENDPOINTS[endpoint][0], json=body)
    assert_rejected(resp, 422, field, "required")


@pytest.mark.parametrize("endpoint", STRICT)
def test_unknown_extra_field_is_422(client, endpoint):
    resp = post(client, endpoint, "钱塘新区在哪里？", temperature=0.2)
    assert_rejected(resp, 422, "temperature", "extra")


def test_unknown_field_inside_a_chat_message_is_422(client):
    resp = client.post("/chat", json={"messages": [{"role": "user", "content": "钱塘新区在哪里", "name": "x"}]})
    assert_rejected(resp, 422, "name", "extra")


def test_openai_endpoint_ignores_client_knobs(client):
    """OpenAI clients send temperature, max_tokens, ...; they are accepted and ignored."""
    resp = client.post("/v1/chat/completions", json={
        "model": "gpt-4o", "temperature": 0.2, "max_tokens": 64, "top_p": 1, "user": "u1",
        "messages": [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "杭州综合保税区获批于哪一年？"}],
    })
    assert_answer_or_abstention(resp, "openai")
    assert resp.json()["model"] == "gpt-4o"


# --- chat history -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "openai"])
def test_empty_messages_is_422(client, endpoint):
    resp = client.post(ENDPOINTS[endpoint][0], json={"messages": []})
    assert_rejected(resp, 422, "messages", "at least 1")


@pytest.mark.parametrize("endpoint", ["chat", "openai"])
def test_last_turn_not_user_is_422(client, endpoint):
    messages = [{"role": "user", "content": "钱塘新区在哪里？"}, {"role": "assistant", "content": "在杭州东部。"}]
    resp = client.post(ENDPOINTS[endpoint][0], json={"messages": messages})
    assert_rejected(resp, 422, "last message", "user")


def test_openai_only_system_messages_is_422(client):
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "你好"}]})
    assert_rejected(resp, 422, "last message", "user")


@pytest.mark.parametrize(("endpoint", "role"), [("chat", "system"), ("chat", "tool"), ("chat", "USER"),
                                                ("openai", "tool"), ("openai", "robot"), ("openai", "")])
def test_unknown_role_is_422(client, endpoint, role):
    messages = [{"role": role, "content": "你好"}, {"role": "user", "content": "钱塘新区在哪里？"}]
    resp = client.post(ENDPOINTS[endpoint][0], json={"messages": messages})
    assert_rejected(resp, 422, "role", "user")


@pytest.mark.parametrize("endpoint", ["chat", "openai"])
def test_too_many_messages_is_422(client, endpoint):
    messages = [{"role": "user", "content": "钱塘新区在哪里？"}] * 51
    resp = client.post(ENDPOINTS[endpoint][0], json={"messages": messages})
    assert_rejected(resp, 422, "messages", "50")


def test_chat_history_message_over_limit_is_422(client):
    messages = [{"role": "assistant", "content": "杭" * 20_001}, {"role": "user", "content": "它在哪里？"}]
    resp = client.post("/chat", json={"messages": messages})
    assert_rejected(resp, 422, "content", "20000")


def test_openai_content_parts_are_read(client):
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "杭州综合保税区"}, {"type": "image_url", "image_url": {"url": "http://x"}},
        {"type": "text", "text": "获批于哪一年？"}]}]})
    assert_answer_or_abstention(resp, "openai")


@pytest.mark.parametrize("content", [None, [], [{"type": "image_url", "image_url": {"url": "http://x"}}]],
                         ids=["null", "no-parts", "no-text-part"])
def test_openai_last_message_without_text_is_422(client, content):
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
    assert_rejected(resp, 422, EMPTY, '"param": "messages"')


@pytest.mark.parametrize("endpoint", ["chat", "openai"])
def test_odd_characters_in_earlier_turns_do_not_break_the_answer(client, endpoint):
    """Only the last turn is checked strictly; odd history must still not cause a 5xx."""
    messages = [
        {"role": "user", "content": "钱塘新区\u200b在哪里？😀"},
        {"role": "assistant", "content": "在杭州东部\x07[1]。"},
        {"role": "user", "content": "它的主导产业是什么？"},
    ]
    resp = client.post(ENDPOINTS[endpoint][0], json={"messages": messages})
    assert_answer_or_abstention(resp, endpoint)


@pytest.mark.parametrize("stream", ["maybe", 2, None], ids=["string", "int", "null"])
def test_openai_bad_stream_flag_is_422(client, stream):
    resp = client.post("/v1/chat/completions",
                       json={"stream": stream, "messages": [{"role": "user", "content": "钱塘新区在哪里？"}]})
    assert_rejected(resp, 422, "stream")


# --- odd but valid ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ALL)
@pytest.mark.parametrize(
    "text",
    [
        "Which industrial platform in Qiantang focuses on semiconductors?",
        "錢塘新區哪個產業平台主攻半導體產業？",
        "2023",
        "杭",
        "？？？杭州综合保税区！！！",
        "「钱塘新区」……在哪里？？",
        "  杭州综合保税区获批于哪一年？  ",
        "杭州综合保税区\n获批于哪一年？",
        "ＡＩ产业在杭州发展如何？",  # full-width Latin
        "5G 基站",
        "ㄅㄆㄇ",  # Bopomofo letters are allowed
    ],
    ids=["english", "traditional", "digits", "one-char", "punctuation-around", "quotes-ellipsis",
         "padded", "newline", "fullwidth", "mixed-latin", "bopomofo"],
)
def test_odd_but_valid_text_gets_an_answer_or_abstention(client, endpoint, text):
    assert_answer_or_abstention(post(client, endpoint, text), endpoint)


# Turns that ask nothing of the articles, with the reply each gets.
ASKS_NOTHING = [("你好！", lang.SMALL_TALK_REPLY), ("谢谢😀", lang.SMALL_TALK_REPLY), ("Thank you", lang.SMALL_TALK_REPLY),
                ("在吗？", lang.SMALL_TALK_REPLY), ("？？？", lang.NOTHING_ASKED_REPLY), ("请问", lang.NOTHING_ASKED_REPLY)]


@pytest.mark.parametrize("endpoint", ["ask", "chat", "openai"])
@pytest.mark.parametrize(("text", "reply"), ASKS_NOTHING, ids=["hello", "thanks", "english", "anyone", "marks", "filler"])
def test_turn_that_asks_nothing_gets_a_word_on_what_to_ask(client, endpoint, text, reply):
    """A greeting, or a turn with no word to look up, is declined with P(right) 0 and told what to
    ask: not answered with the sentence closest to it ("你好" once got "你好吗？”" at 0.98)."""
    body = post(client, endpoint, text).json()
    assert body["abstained"] is True
    if endpoint == "openai":
        assert body["choices"][0]["message"]["content"] == reply and not body["citations"]
        return
    assert (body["answer"], body["confidence"], body["citations"], body["hits"]) == (reply, 0.0, [], [])


@pytest.mark.parametrize("endpoint", ["ask", "chat"])
def test_greeting_before_a_question_does_not_stop_the_answer(client, endpoint):
    body = post(client, endpoint, "你好，杭州综合保税区获批于哪一年？").json()
    assert not body["abstained"] and "2018" in body["answer"]


def test_thanks_mid_chat_gets_small_talk_and_the_chat_goes_on(client):
    """Thanks between questions is small talk; the next follow-up still finds the subject the
    chat is about (the reply to the thanks names none)."""
    question = "杭州综合保税区获批于哪一年？"
    messages = [{"role": "user", "content": question},
                {"role": "assistant", "content": post(client, "ask", question).json()["answer"]},
                {"role": "user", "content": "谢谢！"}]
    thanks = client.post("/chat", json={"messages": messages}).json()
    assert (thanks["answer"], thanks["abstained"], thanks["hits"]) == (lang.SMALL_TALK_REPLY, True, [])
    messages += [{"role": "assistant", "content": thanks["answer"]}, {"role": "user", "content": "它集聚了多少家企业？"}]
    follow = client.post("/chat", json={"messages": messages}).json()
    assert "综合保税区" in follow["question"] and not follow["abstained"] and follow["citations"]


@pytest.mark.parametrize("endpoint", ["ask", "chat", "openai"])
def test_traditional_question_gets_the_simplified_answer(client, endpoint):
    """Traditional characters are converted for retrieval (OpenCC); the question shown is as typed."""
    traditional, simplified = "錢塘新區哪個產業平臺主攻半導體？", "钱塘新区哪个产业平台主攻半导体？"
    got, want = post(client, endpoint, traditional).json(), post(client, endpoint, simplified).json()
    if endpoint == "openai":
        assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
        assert got["citations"] == want["citations"] and got["citations"]
        return
    assert not want["abstained"] and want["citations"]
    assert (got["answer"], got["citations"], got["hits"]) == (want["answer"], want["citations"], want["hits"])
    assert got["question"] == traditional


def test_padded_question_is_answered_as_trimmed(client):
    body = post(client, "ask", "   杭州综合保税区获批于哪一年？\n").json()
    assert body["question"] == "杭州综合保税区获批于哪一年？"


@pytest.mark.parametrize("endpoint", ALL)
def test_wrong_method_is_405(client, endpoint):
    resp = client.get(ENDPOINTS[endpoint][0])
    assert resp.status_code == 405
    assert detail_text(resp)


def test_unknown_path_is_404(client):
    resp = client.post("/nope", json={"question": "钱塘新区在哪里？"})
    assert resp.status_code == 404
    assert detail_text(resp)
