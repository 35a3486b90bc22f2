"""The Milvus store against real Milvus Lite (no mocks): build, incremental update, delete,
search, hybrid fusion, a rebuild killed halfway, and Milvus unavailable or going away.

Small corpora (two of the articles) in temp folders, with the main index's embedding
cache copied in, so builds embed only new text. The file-path (embedded) Milvus Lite
serves the build and search tests; the tests that need a second process or a Milvus
that dies run ``milvus-lite server`` as a real separate process on a loopback port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.config import Settings
from rag.index import IndexNotReady, StoreUnavailable, load_index, rebuild
from rag.loadtest import free_port
from rag.store.milvus_store import connect

ROOT = Path(__file__).resolve().parents[1]
ONNX_DIR = ROOT / "index" / "onnx"
SMALL = ("001_fb9e0f94ea2c9b85.txt", "003_c49358ad4db7109a.txt")
NEW_ARTICLE = """## 青萝湾智造园：小园区里的大配套

青萝湾智造园位于钱塘区东部，规划面积约3.6平方公里，是一座以精密传感器和工业软件为主的小微园区。

今年以来，青萝湾智造园新引进企业27家，其中精密传感器企业12家。

下一步，青萝湾智造园将建设共享洁净车间，为初创团队提供按小时计费的中试产线。
"""


def quiet(_message: str) -> None:
    pass


def small_settings(root: Path, **overrides) -> Settings:
    """Two articles, a private index folder (with the main embedding cache) and Milvus Lite in it."""
    corpus = root / "corpus"
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for name in SMALL:
            shutil.copy(ROOT / "corpus" / name, corpus / name)
    index_dir = root / "index"
    if not index_dir.exists() and (ROOT / "index" / "cache").is_dir():
        shutil.copytree(ROOT / "index" / "cache", index_dir / "cache")
    base = {"corpus_dir": corpus, "index_dir": index_dir, "onnx_dir": ONNX_DIR, "reload_watch_seconds": 0,
            "store": "milvus", "milvus_uri": str(root / "milvus.db")}
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Settings:
    settings = small_settings(tmp_path_factory.mktemp("milvus"))
    report = rebuild(settings, progress=False, log=quiet)
    assert not report.up_to_date and report.chunks > 0
    return settings


def retriever(settings: Settings):
    from rag.service import RagService

    svc = RagService(settings)
    svc.warm_up()
    assert svc.ready, svc.error
    return svc


@pytest.fixture(scope="module")
def service(built):
    return retriever(built)


def test_build_writes_both_collections_and_counts_match(built):
    data = load_index(built)
    info = data.manifest["store"]
    assert info["kind"] == "milvus" and info["analyzer"] == built.milvus_analyzer
    client = connect(built.resolved_milvus_uri, None, 10)
    assert {info["passages"], info["sentences"]} <= set(client.list_collections())
    assert data.store.counts() == (len(data.chunks), len(data.sentences))
    # Sentences come back by id with the passage vectors' dimension, nothing held in a matrix.
    ids = list(data.chunks[3].sent_ids)
    assert data.sentence_vectors[ids].shape == (len(ids), data.manifest["dimension"])


def test_search_finds_the_passage_that_holds_the_words(service):
    data = service.data
    # A sentence of the corpus, asked back: its passage comes first in every mode.
    sentence = next(s.text for s in data.sentences[len(data.sentences) // 2 :]
                    if len(s.text) >= 30 and s.text.endswith("。"))
    for mode in ("hybrid", "dense", "keyword"):
        hits = service.search(sentence, top_k=5, mode=mode)
        assert sentence in hits[0].chunk.text, mode


def test_hybrid_fuses_both_retrievers_and_matches_the_faiss_store(built, service, tmp_path):
    faiss_settings = built.model_copy(update={"store": "faiss", "index_dir": tmp_path / "faiss"})
    shutil.copytree(built.index_dir / "cache", faiss_settings.index_dir / "cache")
    rebuild(faiss_settings, progress=False, log=quiet)
    faiss_svc = retriever(faiss_settings)
    questions = [s.text[:30] for s in service.data.sentences[5::40]]
    agree = 0
    both = 0
    for q in questions:
        hits = service.search(q, top_k=5)
        both += any(h.keyword_rank is not None and h.dense_rank is not None for h in hits)
        agree += hits[0].chunk.chunk_id == faiss_svc.search(q, top_k=5)[0].chunk.chunk_id
        # Dense scores are exact in both stores: dense-only rankings agree passage for passage.
        m_dense = [h.chunk.chunk_id for h in service.search(q, top_k=5, mode="dense")]
        f_dense = [h.chunk.chunk_id for h in faiss_svc.search(q, top_k=5, mode="dense")]
        assert m_dense == f_dense, q
    assert both == len(questions)
    assert agree >= 0.8 * len(questions)
    # Weighted words (a follow-up's earlier turns count less) rank as the in-process BM25 ranks them.
    m_kw, f_kw = service.data.keyword, faiss_svc.data.keyword
    tok = service.data.tokenizer
    same = 0
    pairs = list(zip(questions[:-1], questions[1:], strict=True))
    for now, before in pairs:
        tokens = tok.tokenize(now) + tok.tokenize(before)
        weights = [1.0] * len(tok.tokenize(now)) + [0.3] * len(tok.tokenize(before))
        m_top, f_top = m_kw.search(tokens, 3, weights), f_kw.search(tokens, 3, weights)
        same += m_top[0][0] == f_top[0][0]
        assert m_top[0][1] == pytest.approx(f_top[0][1], rel=0.1)
    assert same >= 0.8 * len(pairs)


def test_incremental_update_embeds_only_the_new_article_and_delete_removes_it(built, tmp_path):
    settings = small_settings(tmp_path, corpus_dir=built.corpus_dir, index_dir=built.index_dir,
                              milvus_uri=built.resolved_milvus_uri)
    before = load_index(settings)
    new = settings.corpus_dir / "900_qingluowan.txt"
    new.write_text(NEW_ARTICLE, encoding="utf-8")
    try:
        report = rebuild(settings, progress=False, log=quiet)
        assert 0 < report.embedded < report.chunks + report.sentences  # only the new article's texts
        data = load_index(settings)
        assert data.manifest["store"]["passages"] != before.manifest["store"]["passages"]
        hits = data.keyword.search(data.tokenizer.tokenize("共享洁净车间"), 3)
        assert data.chunks[hits[0][0]].doc_id == "900_qingluowan"
    finally:
        new.unlink()
    report = rebuild(settings, progress=False, log=quiet)
    assert report.embedded == 0  # everything left was cached
    data = load_index(settings)
    assert "900_qingluowan" not in data.documents
    assert data.store.counts() == (len(before.chunks), len(before.sentences))
    assert all(data.chunks[i].doc_id != "900_qingluowan"
               for i, _ in data.keyword.search(data.tokenizer.tokenize("青萝湾智造园"), 5))
    # Only the live build's and the previous one's collections are left.
    names = [c for c in connect(settings.resolved_milvus_uri, None, 10).list_collections()
             if c.startswith(settings.milvus_prefix + "_")]
    assert len(names) == 4


def test_store_mismatch_and_bad_uri_name_what_to_fix(built, tmp_path):
    with pytest.raises(IndexNotReady, match="RAG_STORE=milvus"):
        load_index(built.model_copy(update={"store": "faiss"}))
    with pytest.raises(StoreUnavailable, match="ending in .db"):
        load_index(built.model_copy(update={"milvus_uri": str(tmp_path / "not-a-db")}))


# --- a Milvus in another process ----------------------------------------------------------


class MilvusServer:
    """``milvus-lite server`` as a separate process on a loopback port (start, kill, restart)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = Path(sys.executable).with_name("milvus-lite")
        self.proc = subprocess.Popen([str(exe), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                connect(self.uri, None, 2).list_collections()
                return
            except Exception:
                time.sleep(0.5)
        raise RuntimeError("milvus-lite server did not start within 60 s")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MilvusServer]:
    srv = MilvusServer(tmp_path_factory.mktemp("milvus-server") / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def on_server(server, tmp_path_factory) -> Settings:
    settings = small_settings(tmp_path_factory.mktemp("on-server"), milvus_uri=server.uri)
    rebuild(settings, progress=False, log=quiet)
    return settings


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "RAG_STORE": "milvus", "RAG_MILVUS_URI": settings.resolved_milvus_uri,
            "RAG_CORPUS_DIR": str(settings.corpus_dir), "RAG_INDEX_DIR": str(settings.index_dir),
            "RAG_ONNX_DIR": str(ONNX_DIR)}


def test_rebuild_killed_halfway_leaves_the_previous_build_serving(on_server):
    settings = on_server
    before = load_index(settings)
    link = os.readlink(settings.current_index)
    proc = subprocess.Popen([str(Path(sys.executable).with_name("rag")), "index", "rebuild", "--force"],
                            env=_env(settings), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    seen = b""
    while b"Inserting" not in seen:  # the Milvus insert phase has begun
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert b"Inserting" in seen, seen.decode(errors="replace")[-2000:]
    assert os.readlink(settings.current_index) == link
    data = load_index(settings)
    assert data.manifest["store"] == before.manifest["store"]
    assert data.store.counts() == (len(before.chunks), len(before.sentences))
    # The aliases for outside tools still name the live build's collections.
    client = connect(settings.resolved_milvus_uri, None, 10)
    assert client.describe_alias(f"{settings.milvus_prefix}_passages")["collection_name"] == \
        data.manifest["store"]["passages"]
    # The next build drops the dead build's half-filled collections and moves the aliases.
    rebuild(settings, force=True, progress=False, log=quiet)
    live = load_index(settings).manifest["store"]
    assert client.describe_alias(f"{settings.milvus_prefix}_sentences")["collection_name"] == live["sentences"]
    names = [c for c in connect(settings.resolved_milvus_uri, None, 10).list_collections()
             if c.startswith(settings.milvus_prefix + "_")]
    assert len(names) == 4


def test_unreachable_milvus_gives_a_clear_start_up_message_and_503(on_server):
    from conftest import run_server

    from api.app import create_app

    dead = f"http://127.0.0.1:{free_port()}"
    settings = on_server.model_copy(update={"milvus_uri": dead, "milvus_timeout": 2.0})
    with run_server(create_app(settings)) as base:
        r = httpx.get(base + "/health", timeout=30)
        assert r.status_code == 503
        assert dead in r.json()["detail"] and "RAG_MILVUS_URI" in r.json()["detail"]
        r = httpx.post(base + "/ask", json={"question": "园区在哪里？"}, timeout=30)
        assert r.status_code == 503 and "Milvus" in r.json()["detail"]


def test_milvus_going_away_gives_503_and_the_service_recovers(server, on_server):
    from conftest import run_server

    from api.app import create_app

    settings = on_server.model_copy(update={"milvus_timeout": 3.0})
    question = load_index(settings).sentences[10].text
    with run_server(create_app(settings)) as base:
        assert httpx.get(base + "/health", timeout=30).status_code == 200
        assert httpx.post(base + "/ask", json={"question": question}, timeout=60).status_code == 200
        server.kill()
        try:
            r = httpx.post(base + "/ask", json={"question": question}, timeout=60)
            assert r.status_code == 503 and server.uri in r.json()["detail"]
            r = httpx.get(base + "/health", timeout=60)
            assert r.status_code == 503 and "Milvus" in r.json()["detail"]
        finally:
            server.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            if httpx.get(base + "/health", timeout=60).status_code == 200:
                break
            time.sleep(1)
        assert httpx.post(base + "/ask", json={"question": question}, timeout=60).status_code == 200


# --- the scale bench over Milvus ------------------------------------------------------------


def test_scale_bench_runs_on_milvus_lite_and_on_a_server(server, tmp_path):
    """`rag bench --scale` at a tiny size: Milvus Lite in a scratch folder, then the server
    RAG_MILVUS_URI names (its row labelled milvus-server, its collections dropped afterwards)."""
    import json

    rag = str(Path(sys.executable).with_name("rag"))
    env = {**os.environ, "RAG_ONNX_DIR": str(ONNX_DIR), "RAG_MILVUS_URI": ""}
    out = tmp_path / "lite.json"
    subprocess.run([rag, "bench", "--scale", "--sizes", "300", "--stores", "milvus-lite", "--scale-out", str(out)],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)
    (row,) = json.loads(out.read_text())
    assert row["config"] == "milvus-lite" and row["passages"] == 300 and row["sentences"] == 1800
    assert row["ask_p50_ms"] > 0 and row["rss_mb"] > 0 and out.with_suffix(".png").is_file()

    client = connect(server.uri, None, 10)
    before = set(client.list_collections())
    out = tmp_path / "server.json"
    subprocess.run([rag, "bench", "--scale", "--sizes", "300", "--stores", "milvus-lite", "--scale-out", str(out)],
                   env={**env, "RAG_MILVUS_URI": server.uri}, cwd=ROOT, check=True, capture_output=True, timeout=600)
    (row,) = json.loads(out.read_text())
    assert row["config"] == "milvus-server" and row["retrieve_p50_ms"] > 0
    assert set(client.list_collections()) == before  # the same client, idle through the bench
