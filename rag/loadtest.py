"""A small closed-loop HTTP load generator for the service (used by tests/test_load.py).

``run_load`` drives N client threads, each with its own keep-alive connection,
posting rotating questions until a request count or a time budget runs out, and
returns counts, throughput and latency percentiles. ``python -m rag.loadtest URL``
runs it from another process (so the clients do not share the server's GIL or
memory) and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Realistic questions about Hangzhou's industrial zones; some are not answerable
# from the corpus on purpose (the service must abstain, not fail).
QUESTIONS: tuple[str, ...] = (
    "杭州综合保税区是哪一年获批设立的？",
    "钱塘新区哪个产业平台主攻半导体产业？",
    "江东芯谷重点发展哪些产业？",
    "杭州医药港集聚了多少家生物医药企业？",
    "杭州综合保税区的面积有多大？",
    "钱塘新区的“515”现代产业发展体系是什么？",
    "杭州大江东产业集聚区主要发展什么产业？",
    "萧山经济技术开发区有哪些重点企业？",
    "杭州高新区（滨江）的数字经济规模有多大？",
    "下沙经济技术开发区是什么时候设立的？",
    "钱塘新区如何吸引大企业和大项目落户？",
    "杭州综保区今年1至10月的进出口总值是多少？",
    "杭州的新基建包括哪些领域？",
    "临空经济示范区在杭州的哪个区？",
    "钱塘新区的生命健康产业发展情况如何？",
    "杭州余杭经济技术开发区的主导产业是什么？",
    "未来科技城聚集了哪些互联网企业？",
    "杭州湾上虞经济技术开发区有哪些化工企业？",
    "杭州如何推动制造业高质量发展？",
    "钱塘新区产业平台改革前实体化运营的面积有多大？",
)


@dataclass
class LoadResult:
    clients: int
    requests: int  # completed, whatever the outcome
    ok: int  # HTTP 200
    errors: int  # anything else, including transport errors
    seconds: float
    req_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of a process in MB, from /proc; NaN when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run_load(
    base_url: str,
    questions: Sequence[str] = QUESTIONS,
    clients: int = 16,
    requests: int | None = None,
    seconds: float | None = None,
    path: str = "/ask",
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> LoadResult:
    """Run ``clients`` closed-loop clients until ``requests`` are sent or ``seconds`` pass.

    At least one of ``requests`` and ``seconds`` must be given; whichever runs
    out first ends the run (requests already in flight complete).
    """
    import httpx

    if requests is None and seconds is None:
        raise ValueError("give requests, seconds or both")
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    samples: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else float("inf")

    def take_ticket() -> int | None:
        nonlocal issued
        with lock:
            if (requests is not None and issued >= requests) or time.perf_counter() >= deadline:
                return None
            issued += 1
            return issued

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout, headers=headers) as client:
            while (ticket := take_ticket()) is not None:
                question = questions[ticket % len(questions)]
                body = {"question": question} if path in ("/ask",) else {"query": question}
                t0 = time.perf_counter()
                try:
                    resp = client.post(path, json=body)
                    status, detail = str(resp.status_code), resp.text[:200]
                except httpx.HTTPError as exc:
                    status, detail = type(exc).__name__, str(exc)[:200]
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1
                    if status != "200" and len(samples) < 10:
                        samples.append(f"{status}: {detail}")

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done = len(latencies)
    ok = statuses.get("200", 0)
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        clients=clients, requests=done, ok=ok, errors=done - ok, seconds=round(wall, 2),
        req_per_s=round(done / wall, 2) if wall > 0 else 0.0,
        p50_ms=round(percentile(ms, 50), 1), p95_ms=round(percentile(ms, 95), 1),
        p99_ms=round(percentile(ms, 99), 1), max_ms=round(max(ms, default=0.0), 1),
        statuses=dict(statuses), error_samples=samples,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="base URL of a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=None, help="stop after this many requests")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--path", default="/ask", choices=["/ask", "/search"])
    parser.add_argument("--api-key", default=os.environ.get("RAG_API_KEY"),
                        help="sent as 'Authorization: Bearer <key>' (default: $RAG_API_KEY)")
    args = parser.parse_args(argv)
    if args.requests is None and args.seconds is None:
        args.seconds = 20.0
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    result = run_load(args.url, clients=args.clients, requests=args.requests, seconds=args.seconds,
                      path=args.path, headers=headers)
    print(json.dumps(asdict(result), ensure_ascii=False))
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
