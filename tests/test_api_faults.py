"""Faults: a missing or damaged index, a rebuild under load, and a rebuild killed with SIGKILL.

The service must say it is not ready (503, with the command to run) rather than
answer from a broken index, keep serving the old index while a new one is built,
and never lose the live index to a rebuild that dies.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, error_detail, run_server

from api.app import create_app
from rag.config import Settings
from rag.index import IndexNotReady, load_index
from rag.service import RagService

RAG = str(Path(sys.executable).with_name("rag"))
HINT = "make index"
# Source locations that must never reach a client (ours or a library's, e.g. faiss's C++ files).
CODE_PATHS = re.compile(r"Traceback|File \"|\.(py|pyx|cpp|cc|h|hpp)\b|site-packages")
QUESTION = {"question": "杭州综合保税区获批于哪一年？"}


# --- helpers -----------------------------------------------------------------------------


def copy_index(src: Path, dst: Path) -> Path:
    """The recipe of the ``index_copy`` fixture: builds and cache copied, ``current`` re-linked."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "builds", dst / "builds", symlinks=True)
    if (src / "cache").exists():
        shutil.copytree(src / "cache", dst / "cache")
    os.symlink(os.readlink(src / "current"), dst / "current")
    return dst


def copy_corpus(dst: Path) -> Path:
    """A writable copy of the corpus articles."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "corpus").glob("*.txt")):
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


def settings_for(index_dir: Path, corpus_dir: Path | None = None, **overrides) -> Settings:
    base = {"corpus_dir": corpus_dir or ROOT / "corpus", "index_dir": index_dir, "reload_watch_seconds": 0}
    return Settings(**{**base, **overrides})


def service_over(settings: Settings, loaded: RagService) -> RagService:
    """A fresh service over ``settings``' index that borrows the already-loaded model.

    Everything index-related (loading, validation, readiness, reload) is the real
    code path; only loading the same model weights a second time is skipped.
    """
    svc = RagService(settings)
    svc.embedder = loaded.embedder
    svc.encoder = loaded.encoder
    svc.warm_up()
    return svc


@contextmanager
def serve(settings: Settings, loaded: RagService) -> Iterator[str]:
    with run_server(create_app(settings, service=service_over(settings, loaded))) as url:
        yield url


def wait_for(condition: Callable[[], bool], what: str, limit: float = 600.0, every: float = 0.2) -> None:
    """Poll until ``condition`` holds; the limit only stops a hung test, it is not a speed check."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


def assert_not_ready(url: str) -> None:
    """/health and every answering route say 503 with the command to run."""
    health = httpx.get(f"{url}/health", timeout=60)
    assert health.status_code == 503, health.text
    body = health.json()
    assert body["ready"] is False and body["status"] == "not ready"
    assert HINT in body["detail"]
    assert not CODE_PATHS.search(health.text), health.text
    requests = [
        ("POST", "/ask", QUESTION),
        ("POST", "/search", {"query": "杭州综合保税区"}),
        ("POST", "/chat", {"messages": [{"role": "user", "content": "杭州综合保税区获批于哪一年？"}]}),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "杭州综合保税区获批于哪一年？"}]}),
        ("GET", "/documents", None),
        ("GET", "/documents/000_cd6546ea3580b673", None),
    ]
    with httpx.Client(base_url=url, timeout=60) as c:
        for method, path, payload in requests:
            resp = c.request(method, path, json=payload)
            assert resp.status_code == 503, (path, resp.status_code, resp.text[:300])
            detail = error_detail(resp)
            assert HINT in detail, (path, detail)
            assert "answer" not in resp.json() and "hits" not in resp.json()
            assert not CODE_PATHS.search(resp.text), resp.text


def rebuild_cmd(index_dir: Path, corpus_dir: Path, *extra: str) -> list[str]:
    return [RAG, "--index-dir", str(index_dir), "--corpus-dir", str(corpus_dir), "index", "rebuild", "--force", *extra]


def tmp_builds(index_dir: Path) -> list[Path]:
    return sorted((index_dir / "builds").glob("tmp-*"))


# --- (a) no index at start ------------------------------------------------------------------


def test_server_without_an_index_starts_and_says_what_to_run(server_factory, settings, tmp_path):
    """An empty index folder: the server starts, answers 503 with `make index`, then picks up an index."""
    empty = tmp_path / "index"
    empty.mkdir()
    with server_factory(share_service=False, index_dir=empty, reload_watch_seconds=0.2) as url:
        assert_not_ready(url)
        # The same server recovers once an index appears (the file watch loads it).
        copy_index(settings.index_dir, empty)  # the `current` link comes last, as in a rebuild
        wait_for(lambda: httpx.get(f"{url}/health", timeout=60).status_code == 200, "the index to load")
        resp = httpx.post(f"{url}/ask", json=QUESTION, timeout=120)
        assert resp.status_code == 200
        assert resp.json()["answer"]


# --- (b) damaged index files ------------------------------------------------------------------


def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        data = (build / name).read_bytes()
        (build / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _garbage(name: str, content: bytes) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        (build / name).write_bytes(content)

    return damage


def _edit_manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        manifest = json.loads((build / "manifest.json").read_text())
        edit(manifest)
        (build / "manifest.json").write_text(json.dumps(manifest))

    return damage


def _other_model(manifest: dict) -> None:
    manifest["model"]["weights_sha256"] = "0123456789ab" + "0" * 52
    manifest["model"]["name"] = "bge-small-zh"


def _other_format(manifest: dict) -> None:
    manifest["format_version"] = 999


def _counts_of_wrong_type(manifest: dict) -> None:
    manifest["counts"] = ["chunks", 1]


def _fewer_sentences(build: Path) -> None:
    import numpy as np

    vectors = np.load(build / "sentences.npy")
    np.save(build / "sentences.npy", vectors[:-10])


def _remove(name: str) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        (build / name).unlink()

    return damage


DAMAGE = {
    "dense.faiss truncated": (_truncate("dense.faiss", 0.5), "corrupt"),
    "dense.faiss empty": (_truncate("dense.faiss", 0.0), "corrupt"),
    "manifest.json garbage": (_garbage("manifest.json", b"\x00\xffnot json{"), "unreadable"),
    "manifest.json not an object": (_garbage("manifest.json", b"[1, 2, 3]"), "unreadable"),
    "manifest from another model": (_edit_manifest(_other_model), "another embedding model"),
    "manifest of another format": (_edit_manifest(_other_format), "format"),
    "manifest with counts of the wrong type": (_edit_manifest(_counts_of_wrong_type), "unreadable"),
    "sentences.npy truncated": (_truncate("sentences.npy", 0.6), "corrupt"),
    "sentences.npy with fewer rows": (_fewer_sentences, "sentence counts differ"),
    "store.json truncated": (_truncate("store.json", 0.5), "corrupt"),
    "keyword.npz garbage": (_garbage("keyword.npz", b"PK\x03\x04garbage"), "corrupt"),
    "userdict.txt missing": (_remove("userdict.txt"), "missing userdict.txt"),
}


@pytest.fixture
def damaged(request, settings, tmp_path) -> tuple[Settings, str]:
    damage, reason = DAMAGE[request.param]
    index_dir = copy_index(settings.index_dir, tmp_path / "index")
    damage((index_dir / "current").resolve())
    return settings_for(index_dir), reason


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_damaged_index_is_refused_with_the_command_to_run(damaged, service):
    bad_settings, reason = damaged
    with pytest.raises(IndexNotReady) as err:
        load_index(bad_settings)
    message = str(err.value)
    assert HINT in message, message
    assert reason in message, message
    # A server over it is not ready: 503 everywhere, never an answer from half an index.
    with serve(bad_settings, service) as url:
        assert_not_ready(url)


def test_dangling_current_link_is_refused(settings, service, tmp_path):
    index_dir = copy_index(settings.index_dir, tmp_path / "index")
    os.unlink(index_dir / "current")
    os.symlink("builds/20000101T000000000000Z", index_dir / "current")
    with pytest.raises(IndexNotReady, match="make index"):
        load_index(settings_for(index_dir))
    with serve(settings_for(index_dir), service) as url:
        assert_not_ready(url)


def _swap_in(index_dir: Path, build: Path) -> None:
    """Point ``current`` at ``build`` the way a rebuild does (atomic replace of the link)."""
    tmp_link = index_dir / ".current.tmp-test"
    tmp_link.symlink_to(Path("builds") / build.name)
    os.replace(tmp_link, index_dir / "current")


def test_damaged_rebuild_is_not_swapped_in_and_is_reported(settings, service, tmp_path, monkeypatch, caplog):
    """A rebuilt index that turns out corrupt is not loaded; the old one keeps answering.

    /health, the admin reload and the log say why; the watcher does not reload the
    broken build on every poll; a good build after it is picked up.
    """
    import rag.service

    attempts: list[str | None] = []
    real_load = rag.service.load_index

    def counting_load(s, *args, **kwargs):
        if s.index_dir == index_dir:
            attempts.append(os.readlink(index_dir / "current"))
        return real_load(s, *args, **kwargs)

    monkeypatch.setattr(rag.service, "load_index", counting_load)
    index_dir = copy_index(settings.index_dir, tmp_path / "index")
    live = settings_for(index_dir, reload_watch_seconds=0.1, api_key="admin-key")
    svc = service_over(live, service)
    good = (index_dir / "current").resolve()
    auth = {"Authorization": "Bearer admin-key"}
    with caplog.at_level(logging.WARNING, logger="rag.api"), run_server(create_app(live, service=svc)) as url:
        old = httpx.get(f"{url}/health", timeout=60).json()
        assert old["detail"] is None
        bad = index_dir / "builds" / "29990101T000000000000Z"
        shutil.copytree(good, bad)
        _truncate("dense.faiss", 0.5)(bad)
        _swap_in(index_dir, bad)
        wait_for(lambda: svc.error is not None, "the watcher to try the damaged build")
        health = httpx.get(f"{url}/health", timeout=60)
        assert health.status_code == 200
        body = health.json()
        assert body["ready"] and body["index_built_at"] == old["index_built_at"] and body["chunks"] == old["chunks"]
        assert HINT in body["detail"] and "corrupt" in body["detail"]
        resp = httpx.post(f"{url}/ask", json=QUESTION, headers=auth, timeout=120)
        assert resp.status_code == 200 and resp.json()["answer"]
        # The admin reload names the build actually served and the reason, not the broken link target.
        reload = httpx.post(f"{url}/admin/reload", headers=auth, timeout=120).json()
        assert reload["reloaded"] is False
        assert reload["index"] == f"builds/{good.name}"
        assert HINT in reload["error"]
        # Polls go on (every 0.1 s) but the same broken build is loaded once, and reported once.
        polls = threading.Event()
        polls.wait(1.0)
        assert attempts.count(f"builds/{bad.name}") == 1, attempts
        warnings = [r for r in caplog.records if "still serving the previous index" in r.getMessage()]
        assert len(warnings) == 1 and "corrupt" in warnings[0].getMessage()
        # A good build after it is loaded, and the error clears.
        fixed = index_dir / "builds" / "29990102T000000000000Z"
        shutil.copytree(good, fixed)
        _swap_in(index_dir, fixed)
        wait_for(lambda: httpx.get(f"{url}/health", timeout=60).json()["detail"] is None, "the good build")
        assert svc.version == f"builds/{fixed.name}"
        reload = httpx.post(f"{url}/admin/reload", headers=auth, timeout=120).json()
        assert reload == {"reloaded": False, "index": f"builds/{fixed.name}", "error": None}


# --- (c) rebuild while serving ---------------------------------------------------------------

NEW_DOC = "900_lanxin_test_article"
NEW_ARTICLE = """# 澜芯微测科技落户钱塘新区

2026年3月，澜芯微测科技有限公司宣布在钱塘新区建设总部基地，主营晶圆级光学检测设备。

澜芯微测科技有限公司的创始人是陈予川，他曾在海外从事光学检测研究十二年。

澜芯微测科技有限公司首期投资额为十七亿元，计划于2027年底实现量产。

据介绍，澜芯微测科技有限公司投产后预计每年生产检测设备三百台。
"""
NEW_QUESTION = "澜芯微测科技有限公司的创始人是谁？"
NEW_FACT = "陈予川"

LOAD_QUESTIONS = [
    "杭州综合保税区获批于哪一年？",
    "钱塘新区哪个产业平台主攻半导体产业？",
    "杭州高新区（滨江）上半年地区生产总值增长多少？",
    "江东芯谷重点发展什么产业？",
    "杭州医药港有哪些企业？",
]


class Hammer:
    """Client threads sending /ask and /search continuously until stopped; records every failure."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as c:
            n = i
            while not self.stop.is_set():
                q = LOAD_QUESTIONS[n % len(LOAD_QUESTIONS)]
                try:
                    if n % 3 == 2:
                        resp = c.post("/search", json={"query": q})
                        ok = resp.status_code == 200 and resp.json()["hits"]
                    else:
                        resp = c.post("/ask", json={"question": q})
                        ok = resp.status_code == 200 and resp.json()["answer"]
                    problem = None if ok else f"{resp.status_code}: {resp.text[:200]}"
                except Exception as exc:  # a dropped connection is a failure too
                    problem = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.done += 1
                    if problem:
                        self.failures.append(problem)
                n += 1

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=600)

    def count(self) -> int:
        with self.lock:
            return self.done


@pytest.mark.slow
def test_rebuild_while_serving_under_load(server_factory, settings, tmp_path):
    index_dir = copy_index(settings.index_dir, tmp_path / "index")
    corpus_dir = copy_corpus(tmp_path / "corpus")
    (corpus_dir / f"{NEW_DOC}.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    log = tmp_path / "rebuild.log"
    with server_factory(share_service=False, index_dir=index_dir, corpus_dir=corpus_dir,
                        reload_watch_seconds=0.2) as url:
        before = httpx.get(f"{url}/health", timeout=60).json()
        assert before["ready"]
        with Hammer(url) as hammer:
            wait_for(lambda: hammer.count() >= 4, "the first requests")
            with log.open("wb") as out:
                proc = subprocess.Popen(rebuild_cmd(index_dir, corpus_dir, "--quiet"), stdout=out,
                                        stderr=subprocess.STDOUT)
                during_start = hammer.count()
                rc = proc.wait(timeout=1800)
            during = hammer.count() - during_start
            assert rc == 0, log.read_text()
            manifest = json.loads((index_dir / "current" / "manifest.json").read_text())

            def swapped() -> bool:
                h = httpx.get(f"{url}/health", timeout=60).json()
                return h["index_built_at"] == manifest["built_at"] and h["chunks"] == manifest["counts"]["chunks"]

            wait_for(swapped, "/health to report the new build")
            after_swap = hammer.count()
            wait_for(lambda: hammer.count() >= after_swap + 8, "requests on the new index")
        assert hammer.failures == [], hammer.failures[:5]
        assert during > 0  # requests really were answered while the rebuild ran
        health = httpx.get(f"{url}/health", timeout=60).json()
        assert health["documents"] == before["documents"] + 1
        assert health["chunks"] == manifest["counts"]["chunks"]
        # The new article is searchable and cited.
        resp = httpx.post(f"{url}/ask", json={"question": NEW_QUESTION}, timeout=120)
        assert resp.status_code == 200
        body = resp.json()
        assert not body["abstained"], body
        cited = [c for c in body["citations"] if c["doc_id"] == NEW_DOC]
        assert cited, body["citations"]
        assert NEW_FACT in body["answer"] or any(NEW_FACT in c["text"] for c in cited)
        doc = httpx.get(f"{url}/documents/{NEW_DOC}", timeout=60)
        assert doc.status_code == 200 and NEW_FACT in doc.json()["text"]


# --- (d) a rebuild killed with SIGKILL ---------------------------------------------------------


def _start_rebuild(index_dir: Path, corpus_dir: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start a rebuild with progress output; a thread collects its output."""
    proc = subprocess.Popen(rebuild_cmd(index_dir, corpus_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, bufsize=0)
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(256):
            output.append(chunk.decode("utf-8", "replace"))

    threading.Thread(target=read, daemon=True).start()
    return proc, output


def _kill_when(proc: subprocess.Popen, condition: Callable[[], bool]) -> bool:
    """SIGKILL ``proc`` as soon as ``condition`` holds; False if it finished first."""
    while proc.poll() is None:
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return proc.returncode == -signal.SIGKILL
        time.sleep(0.002)
    return False


@pytest.mark.slow
def test_rebuild_killed_midway_leaves_the_old_index_serving(settings, service, tmp_path):
    index_dir = copy_index(settings.index_dir, tmp_path / "index")
    corpus_dir = copy_corpus(tmp_path / "corpus")
    # Change a file so the rebuild has real embedding work to do.
    changed = corpus_dir / "001_fb9e0f94ea2c9b85.txt"
    changed.write_text(changed.read_text(encoding="utf-8").replace("高新区", "高新技术产业开发区"), encoding="utf-8")
    live = settings_for(index_dir, corpus_dir, reload_watch_seconds=0.2)
    old_link = os.readlink(index_dir / "current")
    old_builds = sorted(p.name for p in (index_dir / "builds").iterdir())
    old = load_index(live)

    def unchanged() -> None:
        assert os.readlink(index_dir / "current") == old_link
        data = load_index(live)
        assert data.manifest["built_at"] == old.manifest["built_at"]
        assert len(data.chunks) == len(old.chunks)

    with serve(live, service) as url:
        # 1. Killed while embedding (it printed progress): nothing of the new build exists yet.
        proc, output = _start_rebuild(index_dir, corpus_dir)
        assert _kill_when(proc, lambda: "Embedding" in "".join(output)), "".join(output)
        unchanged()
        resp = httpx.post(f"{url}/ask", json=QUESTION, timeout=120)
        assert resp.status_code == 200 and resp.json()["answer"]

        # 2. Killed while writing the new build (its builds/tmp-* folder exists).
        for _attempt in range(3):  # the write window is short; try again if the build won the race
            proc, output = _start_rebuild(index_dir, corpus_dir)
            if _kill_when(proc, lambda: bool(tmp_builds(index_dir))):
                break
            assert proc.returncode == 0, "".join(output)
            # It finished first: put the old builds back so the next attempt starts from the old index.
            for build in (index_dir / "builds").iterdir():
                if build.name not in old_builds:
                    shutil.rmtree(build)
            for name in old_builds:
                if not (index_dir / "builds" / name).exists():
                    shutil.copytree(settings.index_dir / "builds" / name, index_dir / "builds" / name)
            os.unlink(index_dir / "current")
            os.symlink(old_link, index_dir / "current")
            wait_for(lambda: httpx.get(f"{url}/health", timeout=60).json()["index_built_at"]
                     == old.manifest["built_at"], "the server to return to the old build")
        else:
            pytest.fail("could not catch the rebuild while it wrote its tmp folder")
        leftovers = tmp_builds(index_dir)
        assert leftovers and all(p.name.endswith(f"-{proc.pid}") for p in leftovers)
        unchanged()
        assert sorted(p.name for p in (index_dir / "builds").iterdir() if not p.name.startswith("tmp-")) \
            == old_builds
        health = httpx.get(f"{url}/health", timeout=60)
        assert health.status_code == 200 and health.json()["index_built_at"] == old.manifest["built_at"]
        resp = httpx.post(f"{url}/ask", json=QUESTION, timeout=120)
        assert resp.status_code == 200 and resp.json()["answer"]

        # 3. The next rebuild removes the dead folder and succeeds; the server moves to it.
        done = subprocess.run(rebuild_cmd(index_dir, corpus_dir, "--quiet"), capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not tmp_builds(index_dir)
        assert os.readlink(index_dir / "current") != old_link
        new = load_index(live)
        assert "高新技术产业开发区" in new.documents["001_fb9e0f94ea2c9b85"].text
        wait_for(lambda: httpx.get(f"{url}/health", timeout=60).json()["index_built_at"]
                 == new.manifest["built_at"], "the server to load the new build")
        resp = httpx.post(f"{url}/ask", json=QUESTION, timeout=120)
        assert resp.status_code == 200 and resp.json()["answer"]
