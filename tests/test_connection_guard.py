"""The production server against hostile clients (loopback only, bounded in connections, bytes and time).

Idle and half-sent connections must not lock real clients out, a request's headers must arrive in
time however slowly they trickle, and a body that will be refused is refused from its headers (or, when
chunked, as soon as it passes the limit) without the server reading it: the bytes a client manages to
send before the server stops reading are counted.
"""
from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Iterator

import requests

from app import create_app
from tests.conftest import app_config
from tests.fixtures_server import live_process

HOST = "127.0.0.1"
MB = 1 << 20


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


@contextlib.contextmanager
def _sockets(port: int, count: int, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    opened = []
    try:
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=5)
            if first_bytes:
                sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _closed_by_server(sock: socket.socket, within: float, trickle: bytes = b"") -> bool:
    """Whether the server closes `sock` within `within` seconds (sending `trickle` a byte every 0.3 s)."""
    deadline = time.monotonic() + within
    sock.settimeout(0.3)
    sent = 0
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            pass
        except OSError:
            return True
        if trickle:
            try:
                sock.sendall(trickle[sent % len(trickle):][:1])
                sent += 1
            except OSError:
                return True
    return False


def test_idle_half_sent_requests_do_not_lock_out_a_real_client(tmp_path: Path) -> None:
    """More half-sent requests than the connection limit: the real request still answers."""
    with live_process(tmp_path / "data", CONNECTION_LIMIT="40", HEADER_TIMEOUT_SECONDS="120") as live:
        with _sockets(_port(live.base), 120, b"GET / HTTP/1.1\r\n"):
            time.sleep(1.0)  # all of them accepted or queued
            answer = requests.get(f"{live.base}/v1.0/health", timeout=15)
            assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_headers_must_arrive_in_time_however_slowly_they_trickle(tmp_path: Path) -> None:
    with live_process(tmp_path / "data", HEADER_TIMEOUT_SECONDS="1") as live:
        with _sockets(_port(live.base), 1, b"GET /v1.0/health HTTP/1.1\r\n") as (trickling,):
            assert _closed_by_server(trickling, 15, trickle=b"X-Slow: yes\r\n"), "a trickled header is never cut off"
        with _sockets(_port(live.base), 1, b"") as (silent,):
            assert _closed_by_server(silent, 15), "a connection that sends nothing is kept open"
        assert requests.get(f"{live.base}/v1.0/health", timeout=10).status_code == 200


def _read_response(sock: socket.socket, within: float) -> tuple[int, dict]:
    """The status and JSON body of the response on `sock` (read until the server closes it)."""
    sock.settimeout(within)
    data = b""
    with contextlib.suppress(socket.timeout, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "no response"
    return int(head.split()[1]), json.loads(body)


def _send_body(sock: socket.socket, total: int, chunked: bool) -> int:
    """Send up to `total` body bytes (in 64 KiB pieces, or chunks); how many the server took before it stopped."""
    piece, sent = b"x" * (64 * 1024), 0
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece
    sock.settimeout(3)
    with contextlib.suppress(OSError):  # the server closed (reset) the connection, or stopped reading
        while sent < total:
            sock.sendall(frame)
            sent += len(piece)
    return sent


HEADERS = "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}\r\n"


def test_a_large_body_without_a_key_is_refused_before_it_is_read(tmp_path: Path) -> None:
    with live_process(tmp_path / "data", AUTH="on") as live:
        port = _port(live.base)
        for extra in (f"Content-Length: {500 * MB}\r\n", "Transfer-Encoding: chunked\r\n"):
            with _sockets(port, 1, HEADERS.format(path="/v1.0/sources/users/rows", extra=extra).encode()) as (sock,):
                status, body = _read_response(sock, 15)  # nothing of the body sent: answered from the headers
                assert (status, body["code"]) == (401, "unauthorized"), body
            with _sockets(port, 1, HEADERS.format(path="/v1.0/sources/users/rows", extra=extra).encode()) as (sock,):
                assert _send_body(sock, 200 * MB, chunked="chunked" in extra) < 40 * MB  # socket buffers at most
        assert requests.get(f"{live.base}/v1.0/health", timeout=10).status_code == 200


def test_a_body_over_the_limit_is_refused_by_content_length_and_as_it_streams(tmp_path: Path) -> None:
    with live_process(tmp_path / "data", MAX_BODY_BYTES=str(MB)) as live:
        port = _port(live.base)
        declared = HEADERS.format(path="/v1.0/query/train", extra=f"Content-Length: {2 * MB}\r\n").encode()
        with _sockets(port, 1, declared) as (sock,):
            status, body = _read_response(sock, 15)
            assert (status, body["code"], body["details"]) == (413, "request_entity_too_large", {"max_bytes": MB})
        streamed = HEADERS.format(path="/v1.0/query/train", extra="Transfer-Encoding: chunked\r\n").encode()
        with _sockets(port, 1, streamed) as (sock,):
            assert _send_body(sock, 200 * MB, chunked=True) < 40 * MB
        assert requests.get(f"{live.base}/v1.0/health", timeout=10).status_code == 200


def test_the_size_check_comes_before_the_key_lookup(tmp_path: Path, monkeypatch) -> None:
    """Through any WSGI server: an oversized body is 413 without the catalog being asked about its key."""
    app = create_app(app_config(tmp_path / "data", AUTH="on"))
    try:
        catalog = app.extensions["feature_service"].catalog
        monkeypatch.setattr(catalog, "find_api_key", lambda *_: (_ for _ in ()).throw(AssertionError("looked up")))
        client = app.test_client()
        big = client.post("/v1.0/query/train", data=b"x" * (65 * 1024), content_type="application/json",
                          headers={"Authorization": "Bearer fs_not_a_real_key_at_all"})
        assert big.status_code == 413 and big.get_json()["code"] == "request_entity_too_large"
        keyless = client.post("/v1.0/query/train", data=b"{}", content_type="application/json")
        assert keyless.status_code == 401 and keyless.get_json()["code"] == "unauthorized"
    finally:
        from app import close_app

        close_app(app)
