"""A body over the limit always gets its 413, even while the client is still sending it.

A server that answered and closed before reading the rest made the client's
kernel see a reset, and the client never read the 413 (a 1 MB body failed that
way now and then). Real server, real sockets, repeated.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

MB = 1024 * 1024
REPEAT = 15


def _payload(size: int) -> bytes:
    return json.dumps({"question": "钱塘新区在哪里？", "padding": "x" * size}).encode()


@pytest.mark.parametrize("path", ["/ask", "/v1/chat/completions"])
def test_one_mb_body_with_httpx_always_gets_413(base_url, path):
    body = _payload(MB)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(REPEAT):
            resp = client.post(path, content=body, headers={"content-type": "application/json"})
            assert resp.status_code == 413, resp.text[:200]
            assert "too large" in resp.text
        # The connection is still good for the next request.
        assert client.get("/health").status_code == 200


def test_one_mb_chunked_body_with_httpx_always_gets_413(base_url):
    body = _payload(MB)

    def chunks():
        for i in range(0, len(body), 16384):
            yield body[i : i + 16384]

    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(REPEAT):
            resp = client.post("/ask", content=chunks(), headers={"content-type": "application/json"})
            assert resp.status_code == 413, resp.text[:200]


def _raw_post(base_url: str, body: bytes) -> bytes:
    """Send the whole request with sendall (no waiting for an early answer), then read the reply."""
    url = httpx.URL(base_url)
    head = (f"POST /ask HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((url.host, url.port), timeout=60) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_one_mb_body_over_a_raw_socket_always_gets_413(base_url):
    body = _payload(MB)
    for _ in range(REPEAT):
        reply = _raw_post(base_url, body)
        assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
        assert b"too large" in reply
