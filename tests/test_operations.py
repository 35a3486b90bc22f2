"""Operating the server: memory across index reloads, /metrics, request ids, JSON logs.

One real `rag serve` process (its own index copy with two builds, an API key
for /admin/reload, RAG_LOG_FORMAT=json, its stderr in a file): its memory is
read from /proc, its logs from that file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rag.loadtest import free_port, rss_mb

RAG = str(Path(sys.executable).with_name("rag"))
KEY = "ops-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTIONS = ["钱塘新区哪个产业平台主攻半导体？", "杭州综合保税区获批于哪一年？", "杭州医药港已集聚各类生物医药企业多少家？"]
UNANSWERABLE = "上海迪士尼乐园门票多少钱？"  # nothing in the corpus is about it


@dataclass
class Server:
    url: str
    pid: int
    index_dir: Path
    builds: tuple[str, str]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, headers=AUTH)

    def switch(self) -> str:
        """Point ``current`` at the other build (atomically, as a rebuild does); return it."""
        link = self.index_dir / "current"
        target = self.builds[1] if os.readlink(link) == self.builds[0] else self.builds[0]
        tmp = self.index_dir / ".current.tmp"
        tmp.symlink_to(target)
        os.replace(tmp, link)
        return target

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def server(tmp_path_factory, settings) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ops")
    index_dir = root / "index"
    served = os.readlink(settings.current_index)  # builds/<stamp>
    (index_dir / "builds").mkdir(parents=True)
    a, b = served, served + "-copy"
    shutil.copytree(settings.index_dir / served, index_dir / a)
    shutil.copytree(settings.index_dir / served, index_dir / b)
    (index_dir / "current").symlink_to(a)
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "RAG_INDEX_DIR": str(index_dir), "RAG_API_KEY": KEY, "RAG_LOG_FORMAT": "json",
           "RAG_RELOAD_WATCH_SECONDS": "0"}
    with log.open("wb") as err:
        proc = subprocess.Popen([RAG, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("server did not start within 120 s")
        yield Server(url, proc.pid, index_dir, (a, b), log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def metrics(client: httpx.Client) -> dict[str, list]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(resp.text)}


def value(samples: list, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return found[0] if found else 0.0


def test_memory_is_flat_over_ten_reloads(server):
    """Each reload releases the previous index: RSS stays within 30 MB of the first reload's."""
    with server.client() as c:
        for q in QUESTIONS:  # warm: first requests allocate
            assert c.post("/ask", json={"question": q}).status_code == 200
        start = rss_mb(server.pid)
        figures = []
        for _ in range(10):
            target = server.switch()
            resp = c.post("/admin/reload")
            assert resp.status_code == 200 and resp.json() == {"reloaded": True, "index": target, "error": None}
            for q in QUESTIONS:
                assert c.post("/ask", json={"question": q}).status_code == 200
            figures.append(round(rss_mb(server.pid), 1))
    print(f"\nRSS MB: warm {start:.1f}; after each of 10 reloads {figures}")
    assert max(figures) - figures[0] <= 30, (start, figures)
    assert max(figures) - start <= 30, (start, figures)


def test_reloads_are_logged_with_the_build(server):
    with server.client() as c:
        before = server.switch()
        assert c.post("/admin/reload").json()["reloaded"]
    entries = [json.loads(line) for line in server.log_lines()]  # every line is one JSON object
    loaded = [e["message"] for e in entries if e["message"].startswith("index loaded from build")]
    assert loaded, entries[-5:]
    assert loaded[-1].startswith(f"index loaded from build {before} (built ")
    assert "; replaces build builds/" in loaded[-1]


def test_no_progress_bars_in_server_logs(server):
    text = server.log.read_text(encoding="utf-8")
    assert "\r" not in text and "it/s]" not in text and "%|" not in text


def test_request_id_is_returned_and_logged(server):
    with server.client() as c:
        sent = c.post("/ask", json={"question": QUESTIONS[0]}, headers={"X-Request-ID": "client-id.42"})
        made = c.post("/ask", json={"question": QUESTIONS[0]})
        odd = c.post("/ask", json={"question": QUESTIONS[0]}, headers={"X-Request-ID": "bad id\twith spaces"})
        rejected = c.post("/v1/chat/completions", json={"messages": []}, headers={"X-Request-ID": "err-1"})
    assert sent.headers["x-request-id"] == "client-id.42"
    generated = made.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert odd.headers["x-request-id"] != "bad id\twith spaces" and len(odd.headers["x-request-id"]) == 32
    assert rejected.status_code == 422 and rejected.headers["x-request-id"] == "err-1"
    time.sleep(0.2)  # the access log line is written as the response goes out
    access = [json.loads(line) for line in server.log_lines() if '"uvicorn.access"' in line]
    by_id = {e.get("request_id"): e["message"] for e in access}
    assert "POST /ask" in by_id["client-id.42"] and "200" in by_id["client-id.42"]
    assert "POST /ask" in by_id[generated]
    assert "422" in by_id["err-1"]


def test_metrics_count_routes_answers_and_the_index(server):
    with server.client() as c:
        before = metrics(c)
        for q in QUESTIONS:
            assert not c.post("/ask", json={"question": q}).json()["abstained"]
        assert c.post("/ask", json={"question": UNANSWERABLE}).json()["abstained"]
        doc = c.get("/documents").json()[0]["doc_id"]
        assert c.get(f"/documents/{doc}").status_code == 200
        assert c.get("/documents/no-such-doc").status_code == 404
        assert c.post("/ask", json={"question": "x", "padding": "y" * 70_000}).status_code == 413
        assert c.post("/ask", json={"question": "😀"}).status_code == 422
        after = metrics(c)
        assert httpx.get(server.url + "/metrics", timeout=30).status_code == 401  # behind the key

    def delta(family: str, name: str, **labels: str) -> float:
        return value(after[family], name, **labels) - value(before.get(family, []), name, **labels)

    requests = "rag_http_requests"
    assert delta(requests, "rag_http_requests_total", route="/ask", method="POST", status="200") == 4
    assert delta(requests, "rag_http_requests_total", route="/ask", method="POST", status="413") == 1
    assert delta(requests, "rag_http_requests_total", route="/ask", method="POST", status="422") == 1
    # The route template, not the raw path: one series for every document id.
    assert delta(requests, "rag_http_requests_total", route="/documents/{doc_id}", status="200") == 1
    assert delta(requests, "rag_http_requests_total", route="/documents/{doc_id}", status="404") == 1
    assert not any(doc in s.labels.get("route", "") for s in after[requests])
    latency = "rag_http_request_duration_seconds"
    assert delta(latency, latency + "_count", route="/ask", status="200") == 4
    assert delta(latency, latency + "_sum", route="/ask", status="200") > 0
    assert delta("rag_answers", "rag_answers_total", outcome="answered") == 3
    assert delta("rag_answers", "rag_answers_total", outcome="abstained") == 1
    info = after["rag_index_info"][0]
    assert info.labels["version"] == os.readlink(server.index_dir / "current")
    assert int(info.labels["chunks"]) > 0
    built = value(after["rag_index_built_timestamp_seconds"], "rag_index_built_timestamp_seconds")
    assert abs(built - time.time()) < 30 * 24 * 3600  # a real recent time, not 0
    assert value(after["rag_index_loads"], "rag_index_loads_total") >= 1
    batches = "rag_encoder_batch_size"
    assert delta(batches, batches + "_count") >= 4  # every question went through the encoder
    assert delta(batches, batches + "_sum") >= 4


def test_reload_counts_in_metrics(server):
    with server.client() as c:
        before = value(metrics(c)["rag_index_loads"], "rag_index_loads_total")
        version = server.switch()
        assert c.post("/admin/reload").json()["reloaded"]
        after = metrics(c)
    assert value(after["rag_index_loads"], "rag_index_loads_total") == before + 1
    assert after["rag_index_info"][0].labels["version"] == version
