"""Shared fixtures: the real model and index, loaded once; real HTTP servers on loopback.

The suite runs after `make test` has built the index under ./index. Tests that
change an index work on their own copy in a temp folder.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rag.loadtest import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
# Every test index shares the main index's ONNX export of the model (made once, by
# `make index`); the variable reaches the servers and rebuilds that tests start.
ONNX_DIR = ROOT / "index" / "onnx"
os.environ.setdefault("RAG_ONNX_DIR", str(ONNX_DIR))


@pytest.fixture(scope="session")
def settings():
    from rag.config import Settings

    # The watcher is off by default in tests: tests that need it turn it on.
    return Settings(corpus_dir=ROOT / "corpus", index_dir=ROOT / "index", reload_watch_seconds=0, onnx_dir=ONNX_DIR)


@pytest.fixture(scope="session")
def service(settings):
    """The real service over the real index (m3e-small + FAISS + BM25), warmed once."""
    from rag.service import RagService

    svc = RagService(settings)
    svc.warm_up()
    assert svc.ready, svc.error
    return svc


@pytest.fixture(scope="session")
def index_copy(tmp_path_factory, settings) -> Path:
    """A private copy of the built index (builds + cache) for tests that rebuild or damage it."""
    dst = tmp_path_factory.mktemp("index")
    src = settings.index_dir
    shutil.copytree(src / "builds", dst / "builds", symlinks=True)
    if (src / "cache").exists():
        shutil.copytree(src / "cache", dst / "cache")
    os.symlink(os.readlink(src / "current"), dst / "current")
    return dst


def error_detail(resp) -> Any:
    """An error response's message: FastAPI's ``detail`` (a string or a list of errors), or on
    /v1/* the ``message`` of OpenAI's ``{"error": {message, type, param, code}}``, whose shape is checked."""
    body = resp.json()
    if resp.request.url.path.startswith("/v1/"):
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        return body["error"]["message"]
    return body["detail"]


OPENAI_INTERNAL_ERROR = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}


@contextmanager
def run_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import httpx
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("server thread died during start-up")
        time.sleep(0.05)
    else:
        raise RuntimeError("server did not start within 60 s")
    httpx.get(base + "/health", timeout=10)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def copy_corpus_and_index(settings, corpus: Path, index: Path) -> tuple[Path, Path]:
    """Copy the corpus files and the built index (builds, cache, ``current`` link) into two folders."""
    corpus.mkdir(parents=True, exist_ok=True)
    for path in settings.corpus_dir.iterdir():
        if path.is_file():
            shutil.copy(path, corpus / path.name)
    index.mkdir(parents=True, exist_ok=True)
    shutil.copytree(settings.index_dir / "builds", index / "builds", symlinks=True)
    if (settings.index_dir / "cache").exists():
        shutil.copytree(settings.index_dir / "cache", index / "cache")
    os.symlink(os.readlink(settings.index_dir / "current"), index / "current")
    return corpus, index


@pytest.fixture(scope="session")
def upload_dirs(tmp_path_factory, settings) -> tuple[Path, Path]:
    """A corpus copy and an index copy for servers' uploads (POST /documents writes and rebuilds there,
    never in the repo's corpus/ or index/; a shared service keeps serving the repo's index)."""
    folder = tmp_path_factory.mktemp("served")
    return copy_corpus_and_index(settings, folder / "corpus", folder / "index")


@pytest.fixture(scope="session")
def server_factory(service, upload_dirs) -> Callable[..., object]:
    """``with server_factory(**setting_overrides) as base_url:`` — a real server sharing the warmed service."""
    from api.app import create_app
    from rag.config import Settings

    def factory(share_service: bool = True, **overrides):
        # Without overrides, uploads go to temp copies (see upload_dirs), not the repo's folders.
        base = {"corpus_dir": upload_dirs[0], "index_dir": upload_dirs[1], "reload_watch_seconds": 0,
                "onnx_dir": ONNX_DIR}
        app_settings = Settings(**{**base, **overrides})
        return run_server(create_app(app_settings, service=service if share_service else None))

    return factory


@pytest.fixture(scope="session")
def base_url(server_factory) -> Iterator[str]:
    """One real server for the whole session (no API key)."""
    with server_factory() as url:
        yield url
