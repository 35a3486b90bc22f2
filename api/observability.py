"""What operators watch: Prometheus metrics, request ids and the log format.

Owns: the per-app metrics registry (``GET /metrics``), the ASGI middleware that
gives every request an id (``X-Request-ID``, honoured when the client sends a
sane one) and records its route, status and latency, and the logging set-up
(``RAG_LOG_FORMAT=text|json``; JSON lines carry the request id).

Each app has its own registry, so several apps in one process (the tests) do
not collide in prometheus-client's global one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.service import RagService

REQUEST_ID_HEADER = "x-request-id"
# An incoming id is echoed into logs and headers: only short, printable, header-safe ones.
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class Metrics:
    """The app's metrics. Request counts and latency are recorded by :class:`RequestContext`;
    index and encoder figures are read from the service at scrape time."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the page
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("rag_http_requests_total", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("rag_http_request_duration_seconds", "Time to the end of the response",
                                 ["route", "method", "status"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
        self.answers = Counter("rag_answers_total", "Questions answered, by outcome (answered or abstained)",
                               ["outcome"], registry=self.registry)
        for outcome in ("answered", "abstained"):
            self.answers.labels(outcome)  # both series exist from the start

    def watch(self, service: RagService) -> None:
        self.registry.register(_ServiceCollector(service))

    def record_answer(self, abstained: bool) -> None:
        self.answers.labels("abstained" if abstained else "answered").inc()


class _ServiceCollector(Collector):
    """Index version/build time and the query encoder's batch sizes, read when scraped."""

    def __init__(self, service: RagService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        svc = self.service
        info = GaugeMetricFamily("rag_index_info", "The index being served (value 1)",
                                 labels=["version", "built_at", "chunks"])
        built = GaugeMetricFamily("rag_index_built_timestamp_seconds", "When the served index was built (Unix time)")
        ready = GaugeMetricFamily("rag_index_ready", "1 when an index is loaded")
        ready.add_metric([], 1.0 if svc.ready else 0.0)
        if svc.ready:
            data = svc.data
            built_at = str(data.manifest.get("built_at") or "")
            info.add_metric([svc.version or "", built_at, str(len(data.chunks))], 1.0)
            stamp = _timestamp(built_at)
            if stamp is not None:
                built.add_metric([], stamp)
        yield from (info, built, ready)
        reloads = CounterMetricFamily("rag_index_loads", "Indexes loaded since start (the first one included)")
        reloads.add_metric([], float(svc.loads))
        yield reloads
        sizes = svc.encoder.batch_sizes()
        buckets, total, count = [], 0, 0
        for size, n in enumerate(sizes):
            count += n
            total += size * n
            if size:
                buckets.append((str(size), float(count)))
        buckets.append(("+Inf", float(count)))
        hist = HistogramMetricFamily("rag_encoder_batch_size", "Questions encoded together in one forward pass")
        hist.add_metric([], buckets, float(total))
        yield hist


def _timestamp(iso: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def route_label(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The route template (``/documents/{doc_id}``), never the raw path: bounded label values.

    Routing sets ``scope["route"]``; a request turned away before routing (413) is matched here.
    """
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContext:
    """Outermost middleware: request id in and out, one metrics sample per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = incoming if _SANE_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500  # what the client gets if the app raises before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            labels = (route_label(scope, self.routes), scope.get("method", ""), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
            request_id.reset(token)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"  # "-": outside a request (start-up, reload watch)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id (when in a request)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def log_config(fmt: str, level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server (uvicorn's loggers included).

    ``text``: ``time level logger [request id] message``; ``json``: :class:`JsonFormatter`.
    """
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "filters": ["request_id"],
               "stream": "ext://sys.stderr"}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestIdFilter}},
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"handlers": ["main"], "level": level},
        "loggers": {
            **{name: {"handlers": ["main"], "level": level, "propagate": False}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
            "faiss.loader": {"level": "WARNING"},  # which CPU build it tried, line by line
        },
    }


def quiet_progress_bars() -> None:
    """No progress bars in server logs (transformers draws one while loading weights).

    The environment variable covers libraries not imported yet; the calls, those already loaded.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
