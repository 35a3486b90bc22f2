"""The index on disk: manifest, validation on load, incremental and atomic rebuilds, BM25
and the user dictionary, and ``rag index rebuild``.

Everything runs on a private copy of ./index (builds, cache and the ``current`` link)
and of ./corpus in a temp folder; ./index itself is never touched. Embedding uses the
real m3e-small model; with the copied content-hash cache a rebuild embeds only new text.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest

from rag.config import Settings
from rag.corpus import clean_document, load_corpus
from rag.embedding import weights_fingerprint
from rag.index import IndexNotReady, load_index, rebuild
from rag.keyword import KeywordIndex
from rag.text import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
ONNX_DIR = ROOT / "index" / "onnx"

NEW_ARTICLE = """## 青萝湾智造园：小园区里的大配套

记者 / 林晓

青萝湾智造园位于钱塘区东部，规划面积约3.6平方公里，是一座以精密传感器和工业软件为主的小微园区。

今年以来，青萝湾智造园新引进企业27家，其中精密传感器企业12家，园区工业总产值同比增长18.6%。

“我们把检测、打样和中试三类公共平台建在园区中心，企业走路五分钟就能用上。”青萝湾智造园负责人说。

下一步，青萝湾智造园将建设共享洁净车间，为初创团队提供按小时计费的中试产线。
"""


def quiet(_message: str) -> None:
    pass


def build_dirs(link: Path) -> list[Path]:
    builds = link.parent / "builds"
    return sorted(p for p in builds.iterdir() if p.is_dir() and not p.name.startswith("tmp-"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Settings:
    """Settings over a private copy of the built index and of the corpus, brought up to date.

    The first rebuild only embeds text that changed since ./index was built (none when
    the code and corpus are unchanged), thanks to the copied embedding cache.
    """
    root = tmp_path_factory.mktemp("index-work")
    src = ROOT / "index"
    index_dir = root / "index"
    index_dir.mkdir()
    if (src / "builds").is_dir():
        shutil.copytree(src / "builds", index_dir / "builds", symlinks=True)
    if (src / "cache").is_dir():
        shutil.copytree(src / "cache", index_dir / "cache")
    if (src / "current").is_symlink():
        os.symlink(os.readlink(src / "current"), index_dir / "current")
    corpus_dir = root / "corpus"
    shutil.copytree(ROOT / "corpus", corpus_dir)
    settings = Settings(corpus_dir=corpus_dir, index_dir=index_dir, reload_watch_seconds=0, onnx_dir=ONNX_DIR)
    rebuild(settings, progress=False, log=quiet)
    return settings


def corpus_variant(settings: Settings, tmp_path: Path, extra: dict[str, bytes]) -> Settings:
    """The same index folder over a copy of the corpus with extra files."""
    corpus_dir = tmp_path / "corpus"
    shutil.copytree(settings.corpus_dir, corpus_dir)
    for name, data in extra.items():
        (corpus_dir / name).write_bytes(data)
    return settings.model_copy(update={"corpus_dir": corpus_dir})


# --- manifest and load --------------------------------------------------------------


def test_manifest_records_model_chunking_files_and_counts(workspace):
    current = workspace.current_index
    assert current.is_symlink() and os.readlink(current).startswith("builds/")
    manifest = json.loads((current / "manifest.json").read_text())
    model_path = workspace.resolved_model_path()
    assert manifest["model"]["name"] == model_path.name == "embedder"  # the tuned m3e-small (models/embedder)
    assert manifest["model"]["weights_sha256"] == weights_fingerprint(model_path)
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["dimension"] == 512
    assert manifest["chunking"] == {
        "target_chars": 300, "max_chars": 420, "overlap_sentences": 1, "faiss_index_type": "flat",
        "embed_max_tokens": 256, "store": "faiss",
    }
    assert manifest["store"] == {"kind": "faiss", "index_type": "flat"}
    corpus_files = sorted(p for p in workspace.corpus_dir.glob("*.txt"))
    assert manifest["files"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in corpus_files}
    assert "README.md" not in manifest["files"]
    store = json.loads((current / "store.json").read_text(encoding="utf-8"))
    counts = manifest["counts"]
    assert counts["documents"] == len(store["documents"]) == 5
    assert counts["chunks"] == len(store["chunks"]) > 300
    assert counts["sentences"] == len(store["sentences"]) > counts["chunks"]
    user_words = (current / "userdict.txt").read_text(encoding="utf-8").split()
    assert counts["user_words"] == len(user_words)
    built = datetime.fromisoformat(manifest["built_at"])
    assert built.tzinfo is not None
    assert manifest["format_version"] == 2 and len(manifest["input_fingerprint"]) == 64


def test_load_index_matches_the_manifest(workspace):
    data = load_index(workspace)
    counts = data.manifest["counts"]
    assert data.path == workspace.current_index.resolve()
    assert data.store.counts() == (len(data.chunks), counts["sentences"], 512)
    assert len(data.chunks) == counts["chunks"]
    # Sentence vectors come from the store's sentence index by id.
    assert data.sentence_vectors[[0, 7]].shape == (2, 512) and len(data.sentence_vectors) == counts["sentences"]
    assert len(data.sentences) == counts["sentences"]
    assert data.keyword.weights.shape[0] == len(data.chunks)
    assert sorted(data.documents) == sorted(p.stem for p in workspace.corpus_dir.glob("*.txt"))
    # Stored offsets still slice the stored cleaned text exactly.
    for chunk in data.chunks[::25]:
        assert data.documents[chunk.doc_id].text[chunk.start : chunk.end] == chunk.text
    # The stored documents are what cleaning the corpus gives today.
    docs, _ = load_corpus(workspace.corpus_dir)
    for doc in docs:
        assert data.documents[doc.doc_id].text == clean_document(doc).text


def _private_index(workspace: Settings, tmp_path: Path) -> Settings:
    """A second index folder holding a copy of the current build only."""
    index_dir = tmp_path / "index"
    build = workspace.current_index.resolve()
    shutil.copytree(build, index_dir / "builds" / build.name)
    os.symlink(f"builds/{build.name}", index_dir / "current")
    return workspace.model_copy(update={"index_dir": index_dir})


def test_load_index_rejects_inconsistent_counts(workspace, tmp_path):
    settings = _private_index(workspace, tmp_path)
    manifest_path = settings.current_index / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["counts"]["chunks"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexNotReady, match="chunk counts differ") as info:
        load_index(settings)
    assert "rag index rebuild" in str(info.value)


def test_load_index_rejects_another_model_a_missing_file_and_no_index(workspace, tmp_path):
    settings = _private_index(workspace, tmp_path)
    with pytest.raises(IndexNotReady, match="another embedding model"):
        load_index(settings, model_fp="0" * 64)
    (settings.current_index / "dense.faiss").unlink()
    with pytest.raises(IndexNotReady, match="incomplete.*dense.faiss"):
        load_index(settings)
    empty = workspace.model_copy(update={"index_dir": tmp_path / "nothing"})
    with pytest.raises(IndexNotReady, match="No index"):
        load_index(empty)


def test_load_index_rejects_a_corrupt_vector_file(workspace, tmp_path):
    settings = _private_index(workspace, tmp_path)
    (settings.current_index / "sentences.faiss").write_bytes(b"not a faiss file")
    with pytest.raises(IndexNotReady, match="corrupt"):
        load_index(settings)


# --- rebuilds -----------------------------------------------------------------------------


def test_rebuild_with_nothing_changed_is_up_to_date_at_once(workspace):
    before = os.readlink(workspace.current_index)
    builds_before = build_dirs(workspace.current_index)
    messages: list[str] = []
    t0 = time.perf_counter()
    report = rebuild(workspace, progress=False, log=messages.append)
    elapsed = time.perf_counter() - t0
    assert report.up_to_date is True
    assert report.embedded == 0 and report.errors == ()
    assert report.path == workspace.current_index.resolve()
    assert report.chunks == json.loads((workspace.current_index / "manifest.json").read_text())["counts"]["chunks"]
    # No cleaning, tokenising or model load: well under the seconds a build takes.
    assert elapsed < 3.0, elapsed
    assert os.readlink(workspace.current_index) == before
    assert build_dirs(workspace.current_index) == builds_before
    assert any("up to date" in m for m in messages)


def test_forced_rebuild_reuses_cached_embeddings_swaps_and_prunes(workspace):
    link = workspace.current_index
    first = os.readlink(link)
    reports = []
    for _ in range(2):
        reports.append(rebuild(workspace, force=True, progress=False, log=quiet))
    for report in reports:
        assert report.up_to_date is False
        assert report.embedded == 0  # every text is in the content-hash cache
        assert report.documents == 5
    last = reports[-1]
    assert os.readlink(link) == f"builds/{last.path.name}" != first
    assert link.resolve() == last.path
    names = [p.name for p in build_dirs(link)]
    assert len(names) <= 2
    assert last.path.name in names and reports[0].path.name in names  # the previous build is kept
    assert not list((link.parent / "builds").glob("tmp-*"))
    data = load_index(workspace)
    assert len(data.chunks) == last.chunks and len(data.sentences) == last.sentences


def test_new_article_embeds_only_its_own_texts(workspace, tmp_path):
    rebuild(workspace, progress=False, log=quiet)
    before = load_index(workspace)
    settings = corpus_variant(workspace, tmp_path, {"900_qingluowan.txt": NEW_ARTICLE.encode()})
    report = rebuild(settings, progress=False, log=quiet)
    assert report.up_to_date is False and report.errors == ()
    assert report.documents == 6
    total = report.chunks + report.sentences
    assert 0 < report.embedded <= 20, report.embedded  # a handful of chunks and sentences
    assert report.embedded < total / 50
    data = load_index(settings)
    assert "900_qingluowan" in data.documents
    new_chunks = [c for c in data.chunks if c.doc_id == "900_qingluowan"]
    assert new_chunks and len(data.chunks) == len(before.chunks) + len(new_chunks)
    assert all(c.title == "青萝湾智造园：小园区里的大配套" for c in new_chunks)
    assert data.manifest["files"]["900_qingluowan.txt"] == hashlib.sha256(NEW_ARTICLE.encode()).hexdigest()
    # The new text is searchable by keyword straight away.
    hits = data.keyword.search(data.tokenizer.tokenize("共享洁净车间"), 3)
    assert data.chunks[hits[0][0]].doc_id == "900_qingluowan"


def test_corrupt_file_is_reported_and_the_rest_indexes(workspace, tmp_path):
    broken = "钱塘新区".encode() + b"\xff\xfe\xfd" + "产业平台".encode()
    settings = corpus_variant(workspace, tmp_path, {"005_broken.txt": broken, "006_empty.txt": b""})
    messages: list[str] = []
    report = rebuild(settings, force=True, progress=False, log=messages.append)
    assert report.documents == 5
    errors = {e.path: e.message for e in report.errors}
    assert set(errors) == {"005_broken.txt", "006_empty.txt"}
    assert "005_broken.txt" in errors["005_broken.txt"] and "UTF-8" in errors["005_broken.txt"]
    assert any(m.startswith("warning: 005_broken.txt") for m in messages)
    data = load_index(settings)
    assert "005_broken" not in data.documents and len(data.documents) == 5
    assert "005_broken.txt" not in data.manifest["files"]


# --- user dictionary and BM25 -------------------------------------------------------------


def test_user_dictionary_keeps_corpus_names_whole(workspace):
    words = (workspace.current_index / "userdict.txt").read_text(encoding="utf-8").split()
    text = "".join(p.read_text(encoding="utf-8") for p in workspace.corpus_dir.glob("*.txt"))
    for name in ("江东芯谷", "杭州医药港", "大创小镇"):
        assert name in words
        assert text.count(name) >= 3
    # No word is a found name with a particle glued on: that would hide the name from BM25.
    assert "在杭州医药港" not in words and "大创小镇的" not in words
    tokenizer = Tokenizer(words)
    assert "江东芯谷" in tokenizer.tokenize("杭州江东芯谷的集成电路产业")
    assert "江东芯谷" not in Tokenizer([]).tokenize("杭州江东芯谷的集成电路产业")  # plain jieba splits it
    data = load_index(workspace)
    sentence = next(s.text for s in data.sentences if "在杭州医药港" in s.text)
    assert "杭州医药港" in data.tokenizer.tokenize(sentence)
    sentence = next(s.text for s in data.sentences if "大创小镇的" in s.text)
    assert "大创小镇" in data.tokenizer.tokenize(sentence)


def test_bm25_ranks_the_chunk_with_a_rare_term_first(workspace):
    data = load_index(workspace)
    # "珉能科技" occurs once in the corpus, inside "集聚了珉能科技、矢崎配件…" (000).
    text = "".join(p.read_text(encoding="utf-8") for p in workspace.corpus_dir.glob("*.txt"))
    assert text.count("珉能") == 1
    tokens = data.tokenizer.tokenize("珉能科技")
    assert "珉能" in tokens and "珉能" in data.keyword.vocab
    hits = data.keyword.search(tokens, 5)
    top = data.chunks[hits[0][0]]
    assert "珉能科技" in top.text and top.doc_id.startswith("000")
    assert len(hits) > 1 and hits[0][1] > hits[1][1]
    # A rare term weighs more than a common one.
    assert data.keyword.token_idf("珉能") > data.keyword.token_idf("杭州")
    # Unknown tokens score nothing.
    assert data.keyword.search(["不存在的词语甲乙丙"], 5) == []


def test_bm25_built_from_real_chunks_round_trips(workspace, tmp_path):
    data = load_index(workspace)
    chunks = [c for c in data.chunks if c.doc_id.startswith("000")]
    tokenized = [data.tokenizer.tokenize(c.text) for c in chunks]
    index = KeywordIndex.build(tokenized)
    assert sum("南卡口" in c.text for c in chunks) >= 1
    hits = index.search(data.tokenizer.tokenize("南卡口通关时间"), 3)
    assert "南卡口" in chunks[hits[0][0]].text
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    index.save(tmp_path, "kw")
    loaded = KeywordIndex.load(tmp_path, "kw")
    assert loaded.vocab == index.vocab
    query = data.tokenizer.tokenize("杭州综合保税区跨境电商")
    assert (loaded.scores(query) == index.scores(query)).all()


# --- CLI ------------------------------------------------------------------------------------


def test_cli_index_rebuild(workspace, capsys):
    from rag.cli import main

    args = ["--index-dir", str(workspace.index_dir), "--corpus-dir", str(workspace.corpus_dir), "index", "rebuild"]
    assert main([*args, "--force", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "5 documents ->" in out and "chunks" in out
    assert "Index built in" in out and "0 texts embedded" in out
    assert main([*args, "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out
    load_index(workspace)


def test_cli_index_rebuild_missing_corpus_fails_clearly(workspace, tmp_path, capsys):
    from rag.cli import main

    missing = tmp_path / "no-corpus"
    code = main(["--index-dir", str(workspace.index_dir), "--corpus-dir", str(missing), "index", "rebuild"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Corpus folder not found" in err and str(missing) in err
