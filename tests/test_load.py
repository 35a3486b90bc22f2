"""A bounded load test on loopback: 16 concurrent clients on /ask, zero errors, flat memory.

The server runs in this process (in a thread), so its resident memory is this
process's VmRSS. The clients run in a separate process (``python -m rag.loadtest``)
so they neither share the server's GIL nor add to its memory.

Request counts are capped by a time budget so the test stays around two minutes
on a slow or busy machine: the targets are a 500-request warm-up and 5,000
measured requests (``RAG_LOAD_WARMUP``, ``RAG_LOAD_REQUESTS``), within
``RAG_LOAD_SECONDS`` (default 90 s, a quarter for the warm-up). The figures go to
eval/reports/load.md; they are an artefact, not assertions (speed is measured
elsewhere).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rag.loadtest import rss_mb

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "eval" / "reports" / "load.md"
CLIENTS = 16
MAX_GROWTH_MB = 50.0


def vm_rss_mb() -> float:
    """Resident memory of this process (which runs the server thread), from /proc/self/status."""
    gc.collect()
    value = rss_mb()
    if value != value:  # NaN: /proc unreadable
        raise RuntimeError("no VmRSS in /proc/self/status")
    return value


def load(url: str, requests: int, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "rag.loadtest", url, "--clients", str(CLIENTS),
           "--requests", str(requests), "--seconds", str(seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=seconds + 600)
    assert done.stdout.strip(), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_report(warm: dict, run: dict, rss_before: float, rss_after: float, targets: tuple[int, int],
                 budget: float) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    load_avg = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# Load test (tests/test_load.py)",
        "",
        f"Run {datetime.now(UTC).isoformat(timespec='seconds')} on {platform.node()} "
        f"({os.cpu_count()} CPUs, load average {load_avg} at the end), Python {platform.python_version()}.",
        f"Server in-process on loopback (uvicorn, one worker); {CLIENTS} closed-loop clients in another "
        "process posting `/ask` with 20 rotating questions about Hangzhou's industrial zones.",
        "",
        "| phase | requests (target) | errors | seconds | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r, target in (("warm-up", warm, targets[0]), ("measured", run, targets[1])):
        lines.append(
            f"| {name} | {r['requests']} ({target}) | {r['errors']} | {r['seconds']} | {r['req_per_s']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} |"
        )
    lines += [
        "",
        f"Resident memory (VmRSS) after the warm-up: {rss_before:.1f} MB; after the measured phase: "
        f"{rss_after:.1f} MB; growth {rss_after - rss_before:+.1f} MB over {run['requests']} requests "
        f"(limit {MAX_GROWTH_MB:.0f} MB).",
    ]
    if run["requests"] < targets[1]:
        lines += [
            "",
            f"The time budget ended the measured phase before {targets[1]} requests "
            f"(RAG_LOAD_SECONDS={budget:g}).",
        ]
    if run["error_samples"] or warm["error_samples"]:
        lines += ["", "Errors:", *[f"- {e}" for e in warm["error_samples"] + run["error_samples"]]]
    REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_sixteen_clients_get_no_errors_and_memory_stays_flat(server_factory):
    warm_target = int(os.environ.get("RAG_LOAD_WARMUP", "500"))
    run_target = int(os.environ.get("RAG_LOAD_REQUESTS", "5000"))
    budget = float(os.environ.get("RAG_LOAD_SECONDS", "90"))
    with server_factory() as url:
        warm = load(url, warm_target, budget * 0.25)
        rss_before = vm_rss_mb()
        run = load(url, run_target, budget * 0.75)
        rss_after = vm_rss_mb()
    write_report(warm, run, rss_before, rss_after, (warm_target, run_target), budget)

    assert warm["errors"] == 0, warm["error_samples"]
    assert run["errors"] == 0, run["error_samples"]
    assert run["statuses"] == {"200": run["requests"]}
    assert run["requests"] >= CLIENTS  # every client got answers
    assert rss_after - rss_before < MAX_GROWTH_MB, (rss_before, rss_after)
