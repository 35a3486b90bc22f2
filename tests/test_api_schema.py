"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI document.

Runs against a real server on loopback (the real model and index). Every
response must not be a 5xx and must conform to what the schema documents
(status code, content type, headers, body schema), plus schemathesis' other
default checks. Two servers are fuzzed: one without an API key (the admin
endpoint is then off and documented as 404) and one with a key, where the
fuzzer sends the key so the answering endpoints are exercised past the auth
check.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

API_KEY = "schema-fuzz-key"


@pytest.fixture(scope="module")
def open_server(server_factory) -> Iterator[str]:
    with server_factory() as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(server_factory) -> Iterator[str]:
    with server_factory(api_key=API_KEY) as url:
        yield url


def _app_schema() -> dict:
    """The document the app serves at /openapi.json (building the app loads nothing)."""
    from api.app import create_app
    from rag.config import Settings

    return create_app(Settings(reload_watch_seconds=0)).openapi()


# Checks: schemathesis' defaults, with two adjustments.
# - positive_data_acceptance is off: some rules cannot be written in JSON Schema (the last
#   chat message must be the user's; the question must not be empty once invisible
#   characters and emoji are dropped, nor over RAG_MAX_QUESTION_CHARS, see rag/normalize.py),
#   so schema-valid bodies can rightly get a 422. Those rules are tested one by one in test_api_input.py, and
#   test_valid_questions_are_answered below generates valid questions instead.
# - negative_data_rejection also accepts 413: a schema-violating body (e.g. 51 huge chat
#   messages) that is over the 64 KiB limit is rejected before validation, as documented.
CONFIG = SchemathesisConfig.from_dict({
    "checks": {
        "positive_data_acceptance": {"enabled": False},
        "negative_data_rejection": {
            "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429],
        },
    },
})

# No operation is excluded, the admin one included (404 on the open server, a real reload
# with nothing new to load on the keyed one).
# Loaded at collection time so each operation is its own test item.
# (schemathesis.pytest.from_fixture relies on a pytest internal that pytest 9 removed.)
SCHEMA = schemathesis.openapi.from_dict(_app_schema(), config=CONFIG)


def test_served_schema_is_the_fuzzed_one(open_server, keyed_server):
    for url in (open_server, keyed_server):
        served = httpx.get(f"{url}/openapi.json", timeout=30)
        assert served.status_code == 200
        assert served.json() == SCHEMA.raw_schema


FUZZ = settings(
    max_examples=20,
    deadline=None,  # no timing assertions: speed is measured elsewhere
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples on every run: not flaky
)


@SCHEMA.parametrize()
@FUZZ
def test_open_server_conforms_to_its_schema(case, open_server):
    case.call_and_validate(base_url=open_server, timeout=120)


@SCHEMA.parametrize()
@FUZZ
def test_keyed_server_conforms_to_its_schema(case, keyed_server):
    case.call_and_validate(base_url=keyed_server, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)


# --- beyond the schema: what JSON Schema cannot say ---------------------------------------

# Valid question text: Chinese, Latin letters, digits, Chinese and ASCII punctuation, spaces.
_CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_PUNCT = st.sampled_from(list("，。？！、：；“”‘’（）《》【】…—·"))
VALID_TEXT = (
    st.text(st.one_of(_CJK, _CJK, _CJK, _ASCII, _PUNCT), min_size=1, max_size=120)
    .filter(lambda s: s.strip())
)


@pytest.mark.parametrize(("path", "field"), [("/ask", "question"), ("/search", "query")])
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=VALID_TEXT)
def test_valid_questions_are_answered(open_server, path, field, text):
    """Any text within the documented rules gets a 200 (an answer or an abstention)."""
    from rag.normalize import normalize_question

    asked = normalize_question(text)  # the generator only makes valid text
    resp = httpx.post(f"{open_server}{path}", json={field: text}, timeout=120)
    assert resp.status_code == 200, (text, resp.text[:300])
    body = resp.json()
    assert isinstance(body["hits"], list)
    if path == "/ask":
        assert body["answer"].strip() and isinstance(body["abstained"], bool)
        assert body["question"] == asked.display


def test_streamed_completion_follows_the_openai_chunk_format(open_server):
    """stream=true answers text/event-stream: chat.completion.chunk events, then [DONE]."""
    body = {"model": "hz-rag", "stream": True,
            "messages": [{"role": "user", "content": "杭州综合保税区获批于哪一年？"}]}
    with httpx.stream("POST", f"{open_server}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and len({c["id"] for c in chunks}) == 1 for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip()
    assert isinstance(chunks[-1]["abstained"], bool)
    if not chunks[-1]["abstained"]:
        assert chunks[-1]["citations"]
        for cit in chunks[-1]["citations"]:
            assert f"[{cit['id']}]" in text
