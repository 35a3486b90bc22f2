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

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

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


# Loaded at collection time so each operation is its own test item.
# (schemathesis.pytest.from_fixture relies on a pytest internal that pytest 9 removed.)
SCHEMA = schemathesis.openapi.from_dict(_app_schema())


def test_served_schema_is_the_fuzzed_one(open_server, keyed_server):
    import httpx

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
