"""``rag bench --scale``: the stores over synthetic corpora of growing size, written to docs/scale.md.

A synthetic passage recombines six random sentences of the real articles. Its
vectors are synthetic too, derived from real ones without running the model:
each sentence vector is the real sentence's vector plus Gaussian noise
(renormalised), the passage vector the normalised mean of its sentences'.
Questions are the gold questions, encoded by the real model.

Each (store, size) runs in its own process, so its resident memory is its own:
build (insert + index) throughput, query latency for retrieval alone and for a
whole answer (encode, retrieve, read, judge, write; in process, no HTTP), and RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import Settings
from rag.loadtest import rss_mb

CONFIGS = ("faiss-flat", "faiss-hnsw", "milvus-lite")
SENTENCES_PER_PASSAGE = 6
NOISE = 0.05  # per-dimension noise on unit vectors of 512 dims: cosine to the source ~0.6
QUERIES = 60


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def synthetic(settings: Settings, n: int, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """``n`` recombined passages (IndexData parts without a store) and their synthetic vectors."""
    from rag.index import load_index
    from rag.types import Chunk, CleanDocument, Segment, Sentence

    real = load_index(settings.model_copy(update={"store": "faiss"}))
    rng = np.random.default_rng(seed)
    base = real.store.sentence_vectors(list(range(len(real.sentences))))
    pick = rng.integers(0, len(real.sentences), size=(n, SENTENCES_PER_PASSAGE))
    documents: dict[str, CleanDocument] = {}
    chunks: list[Chunk] = []
    sentences: list[Sentence] = []
    for i, row in enumerate(pick):
        doc_id = f"syn{i:07d}"
        parts = [real.sentences[j] for j in row]
        text = "".join(s.text for s in parts)
        title = parts[0].title
        ids = []
        pos = 0
        for s in parts:
            ids.append(len(sentences))
            sentences.append(Sentence(len(sentences), doc_id, title, pos, pos + len(s.text), 1, 1, s.text))
            pos += len(s.text)
        documents[doc_id] = CleanDocument(doc_id, f"{doc_id}.txt", "", text, (Segment(0, len(text), 1),), (), title)
        chunks.append(Chunk(i, doc_id, title, 0, len(text), 1, 1, text, tuple(ids)))
    sent_vecs = base[pick.ravel()] + rng.normal(0, NOISE, size=(n * SENTENCES_PER_PASSAGE, base.shape[1])).astype(np.float32)
    sent_vecs /= np.linalg.norm(sent_vecs, axis=1, keepdims=True)
    chunk_vecs = sent_vecs.reshape(n, SENTENCES_PER_PASSAGE, -1).mean(axis=1)
    chunk_vecs /= np.linalg.norm(chunk_vecs, axis=1, keepdims=True)
    return (real, documents, tuple(chunks), tuple(sentences)), chunk_vecs.astype(np.float32), sent_vecs


def settle(idle_share: float = 0.2, timeout: float = 3600.0) -> float:
    """Wait until this process's background threads are idle (CPU below ``idle_share`` of one
    core over a second); returns the seconds waited."""
    import resource

    def cpu() -> float:
        use = resource.getrusage(resource.RUSAGE_SELF)
        return use.ru_utime + use.ru_stime

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        before = cpu()
        time.sleep(1.0)
        if cpu() - before < idle_share:
            break
    return time.perf_counter() - t0


def run_one(settings: Settings, config: str, n: int, questions: list[str]) -> dict[str, Any]:
    """Build ``config`` over ``n`` synthetic passages and time it; runs in a fresh process."""
    from rag.embedding import Embedder
    from rag.index import IndexData
    from rag.keyword import KeywordIndex
    from rag.pipeline import build_pipeline
    from rag.service import QueryEncoder
    from rag.store.base import SentenceVectors
    from rag.store.faiss_store import FaissStore
    from rag.store.milvus_store import IdfTable, MilvusStore, connect, is_lite

    (real, documents, chunks, sentences), chunk_vecs, sent_vecs = synthetic(settings, n)
    tokenizer = real.tokenizer
    # Tokens per real sentence, computed once: a passage's tokens are its sentences' tokens, so the
    # timed build is the stores' own work (jieba over 1M passages would take hours here).
    by_text: dict[str, list[str]] = {}
    tokens = []
    for c in chunks:
        row: list[str] = []
        for sid in c.sent_ids:
            text = sentences[sid].text
            if text not in by_text:
                by_text[text] = tokenizer.tokenize(text)
            row += by_text[text]
        tokens.append(row)
    scratch = Path(tempfile.mkdtemp(prefix="rag-scale-"))
    server = settings.milvus_uri if settings.milvus_uri and not is_lite(settings.milvus_uri) else None
    label, client, info = config, None, None
    try:
        t0 = time.perf_counter()
        keyword = KeywordIndex.build(tokens)
        if config.startswith("faiss"):
            kind = config.split("-")[1]
            FaissStore.write(scratch, chunk_vecs, sent_vecs, keyword, kind)
            import faiss

            store: Any = FaissStore(faiss.read_index(str(scratch / "dense.faiss")),
                                    faiss.read_index(str(scratch / "sentences.faiss")), keyword)
        else:
            # Milvus Lite in the scratch folder, or the server RAG_MILVUS_URI names (a URL).
            if server:
                label = "milvus-server"
            token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
            uri = server or str(scratch / "milvus.db")
            client = connect(uri, token, 600)
            info = MilvusStore.write(client, f"scale{os.getpid()}", "b", chunk_vecs, sent_vecs,
                                     [" ".join(t) for t in tokens], "ours", settings.milvus_index_type,
                                     lite=not server, progress=False)
            IdfTable(keyword.vocab, keyword.idf, keyword.max_idf).save(scratch)
            store = MilvusStore.open(client, uri, info, scratch)
            if not server:
                # Milvus Lite compacts segments and builds their HNSW indexes in a background thread
                # after the flush (searching by brute force meanwhile): the build ends when it is idle.
                settle()
        build_s = time.perf_counter() - t0
        # The store holds the vectors now (FAISS: read back from its files; Milvus: in the engine):
        # dropping the build's copies leaves RSS to what a serving process holds.
        del keyword, tokens, chunk_vecs, sent_vecs
        data = IndexData(scratch, {"counts": {}}, documents, chunks, sentences, store,
                         SentenceVectors(store, len(sentences)), store.keyword, tokenizer)
        embedder = Embedder.from_settings(settings)
        embedder.warm_up()
        encoder = QueryEncoder(embedder)
        pipeline = build_pipeline(settings, data, encoder.encode_many)
        pipeline.warm_up()
        for q in questions[:5]:
            pipeline.answer(pipeline.queries.build(q), 5)
        queries = [pipeline.queries.build(q) for q in questions]
        retrieve_ms, ask_ms = [], []
        for q in queries:
            t = time.perf_counter()
            pipeline.retrieve(q, 5)
            retrieve_ms.append((time.perf_counter() - t) * 1000)
        for q in questions:
            t = time.perf_counter()
            pipeline.answer(pipeline.queries.build(q), 5)
            ask_ms.append((time.perf_counter() - t) * 1000)
        return {
            "config": label, "passages": n, "sentences": len(sentences),
            "build_s": round(build_s, 2), "vectors_per_s": round((len(chunks) + len(sentences)) / build_s),
            "retrieve_p50_ms": round(_pct(retrieve_ms, 50), 1), "retrieve_p95_ms": round(_pct(retrieve_ms, 95), 1),
            "ask_p50_ms": round(_pct(ask_ms, 50), 1), "ask_p95_ms": round(_pct(ask_ms, 95), 1),
            "rss_mb": round(rss_mb()),
        }
    finally:
        if server and client is not None and info is not None:  # a server keeps collections: drop ours
            for coll in (info["passages"], info["sentences"]):
                client.drop_collection(coll)
        shutil.rmtree(scratch, ignore_errors=True)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for config in dict.fromkeys(r["config"] for r in rows):
        pts = sorted((r for r in rows if r["config"] == config), key=lambda r: r["passages"])
        if not pts:
            continue
        xs = [r["passages"] for r in pts]
        axes[0].plot(xs, [r["retrieve_p50_ms"] for r in pts], marker="o", label=config)
        axes[1].plot(xs, [r["ask_p50_ms"] for r in pts], marker="o", label=config)
        axes[2].plot(xs, [r["rss_mb"] for r in pts], marker="o", label=config)
    for ax, title in zip(axes, ("retrieval p50 (ms)", "answer p50 (ms)", "resident memory (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("passages")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(rows: list[dict[str, Any]], plot_name: str, skipped: list[str]) -> str:
    lines = [
        "| store | passages | sentences | build s | vectors/s | retrieve p50 / p95 ms | answer p50 / p95 ms | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {r['passages']:,} | {r['sentences']:,} | {r['build_s']} | {r['vectors_per_s']:,} "
                     f"| {r['retrieve_p50_ms']} / {r['retrieve_p95_ms']} | {r['ask_p50_ms']} / {r['ask_p95_ms']} "
                     f"| {r['rss_mb']:,} |")
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += ["", f"![latency and memory by corpus size]({plot_name})"]
    return "\n".join(lines) + "\n"


def run_scale_command(args: Any, settings: Settings) -> int:
    """Run every (store, size) in a child process; write the table (and plot) to ``args.report``."""
    from rag.evaluation import load_gold

    sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    configs = [c for c in str(args.stores).split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not sizes or min(sizes) < 1:
        raise ValueError(f"--stores must name some of {list(CONFIGS)} and --sizes positive integers")
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    questions_file = Path("eval/gold.jsonl")
    questions = [g.question for g in load_gold([questions_file])][:QUERIES]
    for n in sizes:
        for config in configs:
            print(f"scale: {config} at {n:,} passages", flush=True)
            proc = subprocess.run([sys.executable, "-m", "rag.bench_scale", config, str(n)], capture_output=True,
                                  text=True, input=json.dumps(questions), timeout=args.timeout)
            if proc.returncode != 0:
                skipped.append(f"{config} at {n:,} (exit {proc.returncode}: {proc.stderr.strip()[-300:]})")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(rows, indent=1))
    plot_path = args.json_out.with_suffix(".png")
    if rows:
        plot(rows, plot_path)
    table = render(rows, plot_path.name, skipped)
    args.json_out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0 if rows else 1


if __name__ == "__main__":  # one (store, size), questions on stdin, one JSON line on stdout
    questions_in = json.loads(sys.stdin.read())
    result = run_one(Settings(), sys.argv[1], int(sys.argv[2]), questions_in)
    print(json.dumps(result))
