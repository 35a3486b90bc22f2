"""``rag bench``: index build timings and HTTP load on a local server, written to a report.

Speed targets are measured here and written to ``eval/reports/bench.md``, never
asserted in tests. The server runs as a separate process (``rag serve``) so the
load generator does not share its interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.evaluation import load_gold
from rag.loadtest import QUESTIONS, LoadResult, free_port, rss_mb, run_load

QUESTIONS_FILE = Path("eval/gold.jsonl")


def time_builds(settings: Settings, log: Any = print) -> dict[str, float]:
    """Full build (empty embedding cache) and no-change rebuild, in a scratch index folder."""
    from rag.index import rebuild

    scratch = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        # The one-time ONNX export is shared: the timing is of the build itself.
        s = settings.model_copy(update={"index_dir": scratch, "onnx_dir": settings.resolved_onnx_dir})
        full = rebuild(s, progress=True, log=log)
        again = rebuild(s, progress=False, log=log)
        forced = rebuild(s, force=True, progress=False, log=log)
        return {"full_s": full.seconds, "no_change_s": again.seconds, "forced_cached_s": forced.seconds,
                "chunks": float(full.chunks), "sentences": float(full.sentences)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _questions() -> list[str]:
    """The gold questions (answerable or not, as users would ask), else the load test's own."""
    if not QUESTIONS_FILE.is_file():
        return list(QUESTIONS)
    return [item.question for item in load_gold([QUESTIONS_FILE])] or list(QUESTIONS)


def _load(base: str, questions: list[str], concurrency: int, duration: float) -> LoadResult:
    """One level of load (rag.loadtest's closed-loop clients), with a progress bar."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run_load, base, questions, clients=concurrency, seconds=duration)
        with tqdm(total=int(duration), desc=f"concurrency {concurrency:2d}", unit="s", leave=False) as bar:
            start = time.perf_counter()
            while not future.done():
                time.sleep(0.5)
                bar.n = min(int(time.perf_counter() - start), int(duration))
                bar.refresh()
        return future.result()


def http_load(settings: Settings, levels: list[int], duration: float) -> tuple[list[LoadResult], dict[str, float]]:
    """Start ``rag serve`` on a free port, warm it, and load it at each concurrency level."""
    import httpx

    port = free_port()
    env = {**os.environ, "RAG_INDEX_DIR": str(settings.index_dir), "RAG_CORPUS_DIR": str(settings.corpus_dir),
           "RAG_API_KEY": "", "RAG_RELOAD_WATCH_SECONDS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            time.sleep(0.3)
        else:
            raise RuntimeError("the server did not become ready within 120 s")
        questions = _questions()
        for q in questions[:20]:  # warm-up
            httpx.post(base + "/ask", json={"question": q}, timeout=30)
        rss_before = rss_mb(proc.pid)
        results = [_load(base, questions, c, duration) for c in levels]
        return results, {"rss_before_mb": rss_before, "rss_after_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def render(builds: dict[str, float] | None, load: list[LoadResult], memory: dict[str, float]) -> str:
    lines = ["# Benchmark", "", f"Machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    if builds:
        lines += [
            "## Index build", "",
            "| what | seconds | target |", "|---|---|---|",
            f"| full build (empty cache, {int(builds['chunks'])} chunks + {int(builds['sentences'])} sentences) | {builds['full_s']:.1f} | ≤ 60 |",
            f"| no-change rebuild | {builds['no_change_s']:.2f} | ≤ 5 |",
            f"| forced rebuild, all embeddings cached | {builds['forced_cached_s']:.1f} | |",
            "",
        ]
    lines += [
        "## HTTP /ask (warm, loopback, server in its own process)", "",
        "| concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.clients} | {r.requests} | {r.errors} | {r.req_per_s:.1f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} |"
              for r in load]
    lines += ["", "Targets: p50 ≤ 20 ms and p95 ≤ 40 ms at concurrency 1; ≥ 80 req/s at concurrency 8.",
              "", f"Server resident memory: {memory.get('rss_before_mb', float('nan')):.0f} MB before the load, "
              f"{memory.get('rss_after_mb', float('nan')):.0f} MB after."]
    return "\n".join(lines) + "\n"


def run_bench_command(args: Any, settings: Settings) -> int:
    levels = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise ValueError(f"--concurrency must list positive integers, got '{args.concurrency}'")
    builds = None if args.skip_build else time_builds(settings)
    load, memory = http_load(settings, levels, args.duration)
    report = render(builds, load, memory)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report, encoding="utf-8")
    print(report)
    print(f"Written to {args.report}")
    return 0 if all(r.errors == 0 for r in load) else 1
