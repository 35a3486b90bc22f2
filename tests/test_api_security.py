"""Security: the API key, path traversal on /documents and /static, CORS, and error bodies.

All requests go to real servers on loopback. The key under test must never come
back in a response (body or headers) nor reach the server's logs.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import OPENAI_INTERNAL_ERROR, error_detail

from api.app import STATIC

KEY = "s3cret-test-key"
ROOT = Path(__file__).resolve().parents[1]
ASK = {"question": "杭州综合保税区获批于哪一年？"}
CHAT = {"messages": [{"role": "user", "content": "杭州综合保税区获批于哪一年？"}]}

# Every route behind the key, with a valid request for it.
PROTECTED = [
    ("POST", "/ask", ASK),
    ("POST", "/search", {"query": "杭州综合保税区"}),
    ("POST", "/chat", CHAT),
    ("GET", "/documents", None),
    ("GET", "/documents/000_cd6546ea3580b673", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "hz-rag", **CHAT}),
]
PROTECTED_IDS = [f"{m} {p}" for m, p, _ in PROTECTED]

# Markers of server internals that an error body must never show.
LEAKS = re.compile(
    r"Traceback|File \"|site-packages|\.py\b|/work/|/usr/|/root/|" + re.escape(str(ROOT)), re.IGNORECASE
)


def assert_no_key(resp: httpx.Response) -> None:
    resp.read()
    assert KEY not in resp.text
    assert KEY not in repr(resp.headers.multi_items())


def assert_no_internals(resp: httpx.Response) -> None:
    resp.read()
    assert not LEAKS.search(resp.text), resp.text[:500]


@pytest.fixture(scope="module")
def keyed_url(server_factory) -> Iterator[str]:
    with server_factory(api_key=KEY) as url:
        yield url


@pytest.fixture
def keyed(keyed_url) -> Iterator[httpx.Client]:
    """A client on the keyed server whose every response is checked for the key."""
    with httpx.Client(base_url=keyed_url, timeout=120, event_hooks={"response": [assert_no_key]}) as c:
        yield c


def raw_get(base_url: str, target: str | bytes) -> httpx.Response:
    """GET with the request target sent byte for byte (httpx would otherwise normalise "../")."""
    raw = target.encode() if isinstance(target, str) else target
    with httpx.Client(base_url=base_url, timeout=30) as c:
        return c.request("GET", "/placeholder", extensions={"target": raw})


def call(client: httpx.Client, method: str, path: str, body, **kwargs) -> httpx.Response:
    return client.request(method, path, json=body, **kwargs)


# --- the API key -------------------------------------------------------------------------


def test_public_routes_work_without_a_key(keyed):
    health = keyed.get("/health")
    assert health.status_code == 200 and health.json()["ready"] is True
    page = keyed.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert assets
    for name in assets:
        resp = keyed.get(f"/static/{name}")
        assert resp.status_code == 200, name
        assert resp.content == (STATIC / name).read_bytes()
    assert keyed.get("/docs").status_code == 200
    assert keyed.get("/openapi.json").status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=PROTECTED_IDS)
@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer wrong-key",
        "Bearer",
        "Bearer s3cret-test-ke",  # a prefix of the key
        "Bearer s3cret-test-keyX",  # the key plus one character
        "Bearer S3CRET-TEST-KEY",
        "Basic czNjcmV0LXRlc3Qta2V5",  # base64 of the key, wrong scheme
        "s3cret-test-key",  # no scheme
        "Token s3cret-test-key",
    ],
    ids=["none", "wrong", "empty", "prefix", "suffix", "case", "basic", "no-scheme", "token-scheme"],
)
def test_protected_routes_need_the_key(keyed, method, path, body, auth):
    headers = {"Authorization": auth} if auth is not None else {}
    resp = call(keyed, method, path, body, headers=headers)
    assert resp.status_code == 401, (resp.status_code, resp.text[:300])
    assert error_detail(resp).startswith("missing or wrong API key")
    assert resp.headers["www-authenticate"] == "Bearer"
    assert_no_internals(resp)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=PROTECTED_IDS)
def test_protected_routes_work_with_the_key(keyed, method, path, body):
    resp = call(keyed, method, path, body, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200, resp.text[:300]


def test_key_in_the_query_string_or_a_cookie_is_not_accepted(keyed):
    assert keyed.post("/ask", json=ASK, params={"api_key": KEY}).status_code == 401
    assert keyed.post("/ask", json=ASK, headers={"X-API-Key": KEY}).status_code == 401
    keyed.cookies.set("Authorization", f"Bearer {KEY}")
    assert keyed.post("/ask", json=ASK).status_code == 401


def test_scheme_is_case_insensitive(keyed):
    assert keyed.post("/ask", json=ASK, headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_non_ascii_authorization_header_is_401_not_500(keyed):
    resp = keyed.post("/ask", json=ASK, headers={"Authorization": "Bearer 密钥".encode()})
    assert resp.status_code == 401


def test_unauthenticated_bad_request_does_not_reach_the_service(keyed):
    """Without the key, a bad body never gets past auth into validation details (or worse)."""
    resp = keyed.post("/ask", json={"question": "", "top_k": 99})
    assert resp.status_code == 401


def test_admin_reload_needs_the_key_and_works_with_it(keyed, service):
    assert keyed.post("/admin/reload").status_code == 401
    assert keyed.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
    resp = keyed.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["reloaded"] is False  # nothing was rebuilt
    assert body["index"] and body["index"].startswith("builds/")
    assert service.ready


def test_admin_reload_is_off_without_a_key(base_url):
    resp = httpx.post(f"{base_url}/admin/reload", timeout=30)
    assert resp.status_code == 404
    resp = httpx.post(f"{base_url}/admin/reload", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert resp.status_code == 404


def test_key_never_reaches_the_server_logs(keyed_url, caplog):
    """Capture every log record (server and app loggers at DEBUG) around authed and failed requests."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "rag", "rag.api", "fastapi"]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level) for lg in loggers]
    # uvicorn's own loggers do not propagate to the root logger, so attach the capture handler to them too.
    attached = [lg for lg in loggers[1:5] if caplog.handler not in lg.handlers]
    for lg in attached:
        lg.addHandler(caplog.handler)
    try:
        for lg in loggers:
            lg.setLevel(logging.DEBUG)
        caplog.handler.setLevel(logging.DEBUG)
        with httpx.Client(base_url=keyed_url, timeout=120) as c:
            good = {"Authorization": f"Bearer {KEY}"}
            bad = {"Authorization": f"Bearer {KEY}-wrong"}
            for method, path, body in PROTECTED:
                call(c, method, path, body, headers=good)
                call(c, method, path, body, headers=bad)
            c.post("/ask", json={"question": ""}, headers=good)  # 422
            c.post("/ask", content=b"{", headers={**good, "content-type": "application/json"})
            c.post("/admin/reload", headers=good)
            c.get("/documents/nope", headers=good)
    finally:
        for lg in attached:
            lg.removeHandler(caplog.handler)
        for lg, level in saved:
            lg.setLevel(level)
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    # The capture works: the access log saw the request paths.
    access = "\n".join(r.getMessage() for r in server_records if r.name == "uvicorn.access")
    assert "/v1/chat/completions" in access and "/admin/reload" in access
    for record in server_records:
        text = record.getMessage() + " " + repr(record.args) + " " + str(record.exc_text or "")
        assert KEY not in text, (record.name, text[:300])
    assert KEY not in caplog.text


# --- documents: unknown ids and path traversal ---------------------------------------------

SENSITIVE = [b"root:x:0:0", b"[project]", b"hz-rag", b"import ", b"RAG_API_KEY", b"BEGIN"]

TRAVERSALS = [
    "/documents/nope",
    "/documents/000_cd6546ea3580b673.txt",  # the file name, not the id
    "/documents/../README.md",
    "/documents/..%2FREADME.md",
    "/documents/..%2F..%2Fetc%2Fpasswd",
    "/documents/%2Fetc%2Fpasswd",
    "/documents/%2e%2e",
    "/documents/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/documents/....%2F%2F....%2F%2Fetc%2Fpasswd",
    "/documents/%252e%252e%252fREADME.md",  # double-encoded
    "/documents/..%5c..%5cREADME.md",  # backslashes
    "/documents/%00",
    "/documents/000_cd6546ea3580b673%00.txt",
    "/documents/" + "a" * 5000,
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_documents_traversal_is_404_without_contents(base_url, target):
    resp = raw_get(base_url, target)
    assert resp.status_code == 404, (target, resp.status_code, resp.text[:300])
    for needle in SENSITIVE:
        assert needle not in resp.content, (target, needle)
    assert_no_internals(resp)
    assert len(resp.content) < 2000  # an error message, not a file


def test_raw_target_is_really_sent(base_url):
    """Guard for the test above: the target extension reaches the server as written."""
    resp = raw_get(base_url, "/documents/000_cd6546ea3580b673")
    assert resp.status_code == 200
    assert resp.json()["doc_id"] == "000_cd6546ea3580b673"


@pytest.mark.parametrize(
    "target",
    [
        "/static/../README.md",
        "/static/..%2FREADME.md",
        "/static/..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/pyproject.toml",
        "/static/%2e%2e%2fapp.py",
        "/static/..%5capp.py",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
    ],
)
def test_static_traversal_is_404(base_url, target):
    resp = raw_get(base_url, target)
    assert resp.status_code == 404, (target, resp.status_code)
    for needle in SENSITIVE + [b"create_app"]:
        assert needle not in resp.content, (target, needle)


def test_unknown_document_names_the_id_not_a_path(base_url):
    resp = httpx.get(f"{base_url}/documents/nope", timeout=30)
    assert resp.status_code == 404
    assert "nope" in resp.json()["detail"]
    assert_no_internals(resp)


def test_document_listing_shows_no_server_paths(base_url):
    docs = httpx.get(f"{base_url}/documents", timeout=30).json()
    assert docs
    for d in docs:
        assert not Path(d["path"]).is_absolute() and "/" not in d["path"]
        assert str(ROOT) not in d["path"]


# --- CORS --------------------------------------------------------------------------------


def test_cors_is_off_by_default(base_url):
    origin = {"Origin": "http://example.test"}
    resp = httpx.post(f"{base_url}/ask", json=ASK, headers=origin, timeout=120)
    assert resp.status_code == 200
    assert "access-control-allow-origin" not in resp.headers
    pre = httpx.options(f"{base_url}/ask", headers={**origin, "Access-Control-Request-Method": "POST"}, timeout=30)
    assert "access-control-allow-origin" not in pre.headers
    assert pre.status_code >= 400


def test_cors_allows_only_the_configured_origin(server_factory):
    with server_factory(cors_origins=["http://example.test"]) as url:
        ok = httpx.post(f"{url}/ask", json=ASK, headers={"Origin": "http://example.test"}, timeout=120)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://example.test"
        pre = httpx.options(f"{url}/ask", timeout=30, headers={
            "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://example.test"
        assert "POST" in pre.headers["access-control-allow-methods"]
        for other in ("http://evil.test", "http://example.test.evil.test", "https://example.test", "null"):
            resp = httpx.post(f"{url}/ask", json=ASK, headers={"Origin": other}, timeout=120)
            assert resp.status_code == 200
            assert "access-control-allow-origin" not in resp.headers, other
            pre = httpx.options(f"{url}/ask", headers={"Origin": other, "Access-Control-Request-Method": "POST"},
                                timeout=30)
            assert pre.headers.get("access-control-allow-origin") != other
            assert pre.status_code >= 400


def test_cors_with_a_key_still_needs_the_key(server_factory):
    with server_factory(cors_origins=["http://example.test"], api_key=KEY) as url:
        resp = httpx.post(f"{url}/ask", json=ASK, headers={"Origin": "http://example.test"}, timeout=120)
        assert resp.status_code == 401
        assert KEY not in resp.text


# --- error bodies ------------------------------------------------------------------------


def test_error_responses_show_no_internals(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as c:
        responses = [
            c.post("/ask", json={"question": ""}),
            c.post("/ask", json={"question": "\x00\u200b"}),  # nothing left once normalised
            c.post("/ask", json={"question": 1}),
            c.post("/ask", content=b"{", headers={"content-type": "application/json"}),
            c.post("/ask", content=b'{"question": "\xff"}', headers={"content-type": "application/json"}),
            c.post("/ask", json={"question": "x" * 70_000}),
            c.post("/chat", json={"messages": [{"role": "assistant", "content": "x"}]}),
            c.post("/v1/chat/completions", json={"messages": "nope"}),
            c.get("/ask"),
            c.get("/documents/nope"),
            c.get("/nope"),
            c.delete("/documents"),
            c.post("/admin/reload"),
        ]
    for resp in responses:
        assert 400 <= resp.status_code < 500, resp
        assert_no_internals(resp)
        detail = error_detail(resp)
        if isinstance(detail, list):  # validation errors do not echo the input back
            assert all(set(e) == {"loc", "msg", "type"} for e in detail), detail


class _Exploding:
    """The real service, except that answering fails with an internal error naming code paths."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def ask(self, *args, **kwargs):
        raise RuntimeError(f"boom in {ROOT}/rag/answer.py line 42, token internal-secret")

    def chat(self, *args, **kwargs):
        raise KeyError(f"{ROOT}/rag/service.py")


def test_unexpected_error_is_a_bare_500(service, settings, caplog):
    """An internal failure answers a generic 500: no traceback, message, path or key."""
    from conftest import run_server

    from api.app import create_app

    app = create_app(settings.model_copy(update={"api_key": None}), service=_Exploding(service))
    with caplog.at_level(logging.ERROR, logger="rag.api"), run_server(app) as url:
        for path, body in (("/ask", ASK), ("/chat", CHAT), ("/v1/chat/completions", CHAT)):
            resp = httpx.post(f"{url}{path}", json=body, timeout=60)
            assert resp.status_code == 500
            assert resp.json() == (OPENAI_INTERNAL_ERROR if path.startswith("/v1/") else {"detail": "internal error"})
            assert_no_internals(resp)
            assert "internal-secret" not in resp.text
    # Operators still get the details in the log.
    assert any("unhandled error on POST /ask" in r.getMessage() for r in caplog.records)


@dataclasses.dataclass(frozen=True)
class _PartialCitation:
    """A citation missing fields the wire schema requires (a server-side bug, not the client's)."""

    id: int
    doc_id: str
    title: str
    line_start: int
    line_end: int


class _BadCitations(_Exploding):
    def chat(self, *args, **kwargs):
        answer = self._inner.chat(*args, **kwargs)
        return dataclasses.replace(answer, citations=(_PartialCitation(1, "x", "t", 1, 2),))


def test_server_side_validation_error_is_500_not_400(service, settings):
    """Pydantic errors raised inside a route are the server's fault: a bare 500, no schema details."""
    from conftest import run_server

    from api.app import create_app

    app = create_app(settings.model_copy(update={"api_key": None}), service=_BadCitations(service))
    with run_server(app) as url:
        resp = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=60)
    assert resp.status_code == 500, resp.text
    assert resp.json() == OPENAI_INTERNAL_ERROR
