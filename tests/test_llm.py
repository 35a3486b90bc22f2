"""Optional LLM generation (rag/llm.py) against a stand-in OpenAI-compatible server on loopback.

The stand-in records every request and replies as the test tells it (a reply
text, a slow reply, a 500, garbage). The real model and index are loaded once
for the module, in a RagService whose settings point at the stand-in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import ROOT, free_port, run_server

QUESTION = "杭州医药港已集聚各类生物医药企业多少家？"  # one the judge answers
NOT_FOUND = "资料中没有找到这个问题的答案。"


@dataclass
class StubBehaviour:
    """What the stand-in does with the next requests."""

    reply: str = "好的[1]。"
    status: int = 200
    # Replies only once this is set (up to 10 s); ``replied`` says whether it had replied
    # by the time it is read, so a client that gave up first is seen without timing it.
    gate: threading.Event | None = None
    replied: bool = False
    raw_body: bytes | None = None  # sent as is instead of a chat completion
    # With stream: true, after its first piece the stub waits for this (up to 10 s) before the
    # rest, and records whether the client saw that piece in time (so it was streamed).
    hold: threading.Event | None = None
    released: bool | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)


class StubLlm:
    """A tiny OpenAI-compatible chat server in a thread, controllable per test."""

    def __init__(self) -> None:
        self.behaviour = StubBehaviour()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                b = stub.behaviour
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                b.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                if b.gate is not None:
                    b.gate.wait(10)
                b.replied = True
                if body and body.get("stream") and b.status < 400 and b.raw_body is None:
                    self._stream(b)
                    return
                if b.raw_body is not None:
                    payload = b.raw_body
                elif b.status >= 400:
                    payload = json.dumps({"error": {"message": "stub failure"}}).encode()
                else:
                    payload = json.dumps({
                        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": b.reply}}],
                    }, ensure_ascii=False).encode()
                try:
                    self.send_response(b.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout test)
                    pass

            def _stream(self, b: StubBehaviour) -> None:
                """Server-sent events, a few characters a piece, as an OpenAI server streams."""
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i in range(0, len(b.reply), 4):
                        chunk = {"choices": [{"index": 0, "delta": {"content": b.reply[i : i + 4]}}]}
                        self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                        self.wfile.flush()
                        if i == 0 and b.hold is not None:
                            b.released = b.hold.wait(10)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="stub-llm", daemon=True)
        self.thread.start()

    def set(self, **kw: Any) -> StubBehaviour:
        self.behaviour = StubBehaviour(**kw)
        return self.behaviour

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def llm_settings(base_url: str, **overrides: Any):
    from rag.config import Settings

    values: dict[str, Any] = {
        "corpus_dir": ROOT / "corpus", "index_dir": ROOT / "index", "reload_watch_seconds": 0,
        "llm_base_url": base_url + "/v1", "llm_model": "stub", "llm_api_key": "k", "llm_timeout": 0.5,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def stub() -> Iterator[StubLlm]:
    s = StubLlm()
    yield s
    s.close()


@pytest.fixture(scope="module")
def llm_svc(stub):
    """A RagService over the real model and index whose answers the stand-in LLM writes."""
    from rag.service import RagService

    svc = RagService(llm_settings(stub.base))
    svc.warm_up()
    assert svc.ready, svc.error
    assert svc.generator is not None
    return svc


@pytest.fixture(scope="module")
def extractive(llm_svc):
    """The extractive answer to QUESTION (the generator switched off for one call)."""
    from rag.llm import LlmGenerator

    class Off(LlmGenerator):
        def generate(self, question, hits, fallback):  # type: ignore[override]
            return fallback

    real = llm_svc.generator
    llm_svc.generator = Off(llm_svc.settings)
    try:
        answer = llm_svc.ask(QUESTION)
    finally:
        llm_svc.generator = real
    assert not answer.abstained and answer.citations
    return answer


# --- pure post-processing (no server) ------------------------------------------


def test_renumber_drops_unknown_markers_and_renumbers_by_first_appearance():
    from rag.llm import renumber

    text, order, dropped = renumber("甲[3]，乙[7][1]，丙[3][0]。", 5)
    assert text == "甲[1]，乙[2]，丙[1]。"
    assert order == [3, 1]
    assert dropped == [0, 7]


def test_renumber_normalises_grouped_and_fullwidth_markers():
    from rag.llm import renumber

    text, order, dropped = renumber("甲【2】，乙[2, 4，9]。", 5)
    assert text == "甲[1]，乙[1][2]。"
    assert order == [2, 4]
    assert dropped == [9]


def test_not_found_detection_ignores_spacing_and_punctuation():
    from rag.llm import is_not_found

    assert is_not_found(NOT_FOUND)
    assert is_not_found(" 资料中没有找到这个问题的答案 ")
    assert not is_not_found("江东芯谷是主攻半导体的平台[1]。")


# --- through the service ----------------------------------------------------------


def test_llm_answer_drops_unknown_marker_and_cites_passages(stub, llm_svc):
    calls = stub.set(reply="钱塘新区的半导体主攻平台是江东芯谷[2]，另见[7]，总体情况见[1][2]。")
    answer = llm_svc.ask(QUESTION)

    assert not answer.abstained
    assert answer.text == "钱塘新区的半导体主攻平台是江东芯谷[1]，另见，总体情况见[2][1]。"
    assert "[7]" not in answer.text
    assert answer.note.startswith("generated by LLM stub")
    # Marker numbers follow first appearance: [1] is the prompt's passage 2, [2] its passage 1.
    assert [c.id for c in answer.citations] == [1, 2]
    given = [h.chunk for h in answer.hits]
    for cit, chunk in zip(answer.citations, (given[1], given[0]), strict=True):
        assert (cit.text, cit.doc_id, cit.title, cit.chunk_id) == (chunk.text, chunk.doc_id, chunk.title, chunk.chunk_id)
        assert (cit.start, cit.end, cit.line_start, cit.line_end) == (chunk.start, chunk.end, chunk.line_start, chunk.line_end)

    # What the stand-in received: one OpenAI-style request with the passages, the question and the key.
    assert len(calls.requests) == 1
    req = calls.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"].get("Authorization") == "Bearer k"
    body = req["body"]
    assert body["model"] == "stub" and body["temperature"] == 0
    prompt = "\n".join(m["content"] for m in body["messages"])
    assert QUESTION in prompt
    assert NOT_FOUND in prompt
    for n, chunk in enumerate(given, start=1):
        assert f"[{n}] 《{chunk.title}》\n{chunk.text.strip()}" in prompt
    assert f"[{len(given) + 1}]" not in prompt


def test_not_found_reply_keeps_the_judges_decision(stub, llm_svc, extractive):
    """Only the judge abstains: an LLM that finds nothing leaves the cited extractive answer."""
    stub.set(reply=NOT_FOUND)
    answer = llm_svc.ask(QUESTION)
    assert not answer.abstained
    assert answer.text == extractive.text and answer.citations == extractive.citations
    assert "found no answer" in answer.note


def test_llm_is_not_asked_when_the_judge_abstains(stub, llm_svc):
    behaviour = stub.set(reply="江东芯谷主攻半导体[1]。")
    answer = llm_svc.ask("杭州医药港已集聚各类生物医药企业多少吨？")  # a unit the sources never use
    assert answer.abstained and not answer.citations and answer.hits
    assert behaviour.requests == []


def test_reply_without_valid_marker_falls_back(stub, llm_svc, extractive):
    stub.set(reply="江东芯谷主攻半导体[9]。")
    answer = llm_svc.ask(QUESTION)
    assert (answer.text, answer.citations) == (extractive.text, extractive.citations)
    assert "extractive answer shown" in answer.note and "[9]" in answer.note

    stub.set(reply="江东芯谷主攻半导体。")
    answer = llm_svc.ask(QUESTION)
    assert (answer.text, answer.citations) == (extractive.text, extractive.citations)
    assert "cited no given passage" in answer.note


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ({}, "timeout"),  # the stub holds its reply until the test lets it go
        ({"status": 500}, "HTTP 500"),
        ({"status": 401}, "HTTP 401"),
        ({"raw_body": b"<html>not json"}, "malformed"),
        ({"raw_body": b'{"choices": []}'}, "malformed"),
        ({"raw_body": b'{"choices": [{"message": {"content": null}}]}'}, "malformed"),
    ],
    ids=["timeout", "500", "401", "garbage", "no-choices", "null-content"],
)
def test_failures_fall_back_to_extractive_answer(stub, llm_svc, extractive, behaviour, reason):
    gate = threading.Event()
    calls = stub.set(**behaviour, gate=gate if reason == "timeout" else None)
    answer = llm_svc.ask(QUESTION)
    # The client gave up (llm_timeout=0.5) while the stub still held its reply.
    replied_first = calls.replied
    gate.set()
    if reason == "timeout":
        assert not replied_first, "llm_timeout not honoured: the client waited for the reply"
    assert len(calls.requests) == 1
    assert answer.text == extractive.text
    assert answer.citations == extractive.citations
    assert answer.abstained is False
    assert answer.note.startswith("LLM unavailable (") and reason in answer.note
    assert answer.note.endswith("extractive answer shown")


def test_unreachable_server_falls_back(extractive):
    """A closed port: connection refused, fallback, no exception."""
    from rag.llm import LlmGenerator

    gen = LlmGenerator(llm_settings(f"http://127.0.0.1:{free_port()}"))
    answer = gen.generate(QUESTION, list(extractive.hits), extractive)
    assert answer.text == extractive.text
    assert answer.note.startswith("LLM unavailable (connection error")


@pytest.mark.parametrize("status", [401, 500])
def test_key_never_in_note_or_log(stub, extractive, caplog, status):
    from rag.llm import LlmGenerator

    secret = "sk-SECRET-1234567890"
    calls = stub.set(status=status)
    with caplog.at_level("DEBUG"):
        answer = LlmGenerator(llm_settings(stub.base, llm_api_key=secret)).generate(
            QUESTION, list(extractive.hits), extractive)
        closed = LlmGenerator(llm_settings(f"http://127.0.0.1:{free_port()}", llm_api_key=secret)).generate(
            QUESTION, list(extractive.hits), extractive)
    assert calls.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert answer.note == f"LLM unavailable (HTTP {status}); extractive answer shown"
    for text in (answer.note, closed.note, caplog.text):
        assert secret not in text
    assert "LLM unavailable" in caplog.text


def test_no_key_sends_no_authorization(stub, extractive):
    from rag.llm import LlmGenerator

    calls = stub.set(reply="江东芯谷[1]。")
    gen = LlmGenerator(llm_settings(stub.base, llm_api_key=""))
    answer = gen.generate(QUESTION, list(extractive.hits), extractive)
    assert answer.text == "江东芯谷[1]。"
    assert "Authorization" not in calls.requests[0]["headers"]


def test_ask_over_http_returns_llm_answer(stub, llm_svc):
    from api.app import create_app

    stub.set(reply="主攻半导体的是江东芯谷[1]，另见[6]。")
    with run_server(create_app(llm_svc.settings, service=llm_svc)) as base:
        r = httpx.post(base + "/ask", json={"question": QUESTION}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "主攻半导体的是江东芯谷[1]，另见。"
    assert body["abstained"] is False
    assert body["note"] == "generated by LLM stub; dropped markers to passages not given: [6]"
    assert len(body["citations"]) == 1
    cit, first = body["citations"][0], body["hits"][0]
    assert cit["id"] == 1
    assert (cit["doc_id"], cit["text"], cit["chunk_id"], cit["start"], cit["end"]) == (
        first["doc_id"], first["text"], first["chunk_id"], first["start"], first["end"])


def test_openai_stream_forwards_the_llm_text_as_it_is_written(stub, llm_svc):
    """With an LLM writer, /v1 streaming sends the LLM's pieces as they arrive (before the LLM has
    finished), then the sources under the numbers the text uses, and a last chunk with the answer."""
    import httpx

    from api.app import create_app

    reply = "江东芯谷主攻半导体产业[2]，另见总体规划[1]。"
    behaviour = stub.set(reply=reply, hold=threading.Event())
    with run_server(create_app(llm_settings(stub.base), service=llm_svc)) as base:
        arrivals: list[dict] = []
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=60,
                          json={"model": "hz-rag", "stream": True,
                                "messages": [{"role": "user", "content": QUESTION}]}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(json.loads(line[6:]))
                    if arrivals[-1]["choices"] and arrivals[-1]["choices"][0]["delta"].get("content"):
                        behaviour.hold.set()  # the LLM's first piece reached us while it was still writing
    # The stub was let go by the client having seen its first piece: the text was streamed.
    assert behaviour.released is True
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in arrivals if c["choices"])
    assert text.startswith(reply)  # the text as the LLM wrote it, markers as written
    assert "来源：\n[2] " in text and "\n[1] " in text  # the sources under those numbers
    last = arrivals[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["answer"].startswith("江东芯谷主攻半导体产业[1]")  # renumbered to the citations
    assert [c["id"] for c in last["citations"]] == [1, 2]
    assert not last["abstained"]


def test_openai_stream_falls_back_when_the_llm_fails(stub, llm_svc, extractive):
    import httpx

    from api.app import create_app

    stub.set(status=500)
    with run_server(create_app(llm_settings(stub.base), service=llm_svc)) as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=60,
                          json={"model": "hz-rag", "stream": True,
                                "messages": [{"role": "user", "content": QUESTION}]}) as resp:
            chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.startswith(extractive.text)
    assert chunks[-1]["answer"] == extractive.text and "LLM unavailable" in chunks[-1]["note"]
