"""The production HTTP server: waitress, guarded against clients that hold connections or send refused bodies.

Waitress reads each request whole (headers and body) before a worker thread sees it, and by default
stops accepting at 100 open connections, closing idle ones only after 120 s: about 100 half-sent
requests lock everyone out. Here:

- a request's line and headers must arrive within HEADER_TIMEOUT_SECONDS of its first byte (a new
  connection must send one within that time too), however slowly it trickles;
- a connection with no request in progress that sends nothing for CHANNEL_TIMEOUT_SECONDS is closed
  (checked every second);
- at CONNECTION_LIMIT open connections, the ones idle longest with no request being served are
  closed to make room, so new clients are never locked out by idle ones;
- a body is refused from its headers (`app.body_guard.BodyPolicy`: over the route's limit, or no
  key) before any of it is read, and a chunked body as soon as it passes the limit.

Per-client limits (connections and request rate per address) belong to a reverse proxy in front.
"""
from __future__ import annotations

import logging
import socket
import sys
import time
from typing import Any, Mapping

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error, RequestEntityTooLarge

from app.body_guard import BodyPolicy, error_response, too_large
from common.errors import FeatureStoreError

log = logging.getLogger("featurestore")


class _JsonError(Error):
    """A refusal in the service's JSON error shape, as waitress's error task writes it."""

    def __init__(self, error: FeatureStoreError):
        status, headers, self.json = error_response(error)
        super().__init__(self.json)
        self.code, self.reason = error.status, status.split(" ", 1)[1]
        self.headers = [header for header in headers if header[0] == "Content-Type"]

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        return f"{self.code} {self.reason}", list(self.headers), self.json


class GuardedParser(HTTPRequestParser):
    """Waitress's request parser, refusing by `policy` once the headers are in and as a chunked body grows."""

    policy: BodyPolicy  # set on the subclass each server makes

    def received(self, data: bytes) -> int:
        in_headers = not self.headers_finished
        consumed = super().received(data)
        if self.empty or not (self.error is None or isinstance(self.error, RequestEntityTooLarge)):
            return consumed
        if in_headers and self.headers_finished:
            self._refuse(self.policy.refusal(self.path, None if self.chunked else self.content_length, self.chunked,
                                             self.headers.get("AUTHORIZATION", "")))
        elif self.chunked and self.body_bytes_received > self.policy.limit(self.path):
            self._refuse(too_large(self.policy.limit(self.path)))
        return consumed

    def _refuse(self, error: FeatureStoreError | None) -> None:
        if error is not None:
            self.error, self.completed, self.expect_continue = _JsonError(error), True, False


class GuardedChannel(HTTPChannel):
    """A connection that remembers when its current request began (for the header time limit)."""

    def __init__(self, server: "GuardedServer", sock: Any, addr: Any, adj: Adjustments, map: Any = None):
        self.parser_class = server.parser_class
        self.request_started = time.time()
        self.started_any = False
        super().__init__(server, sock, addr, adj, map=map)

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started, self.started_any = time.time(), True
        return super().received(data)

    def awaiting_headers(self, before: float) -> bool:
        """Whether it has owed a request line and headers since before `before` (nothing being served)."""
        if self.requests or self.request_started >= before:
            return False
        return not self.started_any if self.request is None else not self.request.headers_finished


class GuardedServer(TcpWSGIServer):
    """Waitress's TCP server with the header time limit and room made at the connection limit."""

    channel_class = GuardedChannel

    def __init__(self, application: Any, socket_map: dict, *, policy: BodyPolicy, header_timeout: float,
                 **kwargs: Any):
        self.parser_class = type("Parser", (GuardedParser,), {"policy": policy})
        self.header_timeout = header_timeout
        super().__init__(application, socket_map, **kwargs)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections: channel_timeout
        for channel in list(self.active_channels.values()):
            if isinstance(channel, GuardedChannel) and channel.awaiting_headers(now - self.header_timeout):
                channel.will_close = True

    def readable(self) -> bool:
        if self.accepting and len(self._map) >= self.adj.connection_limit:
            self._make_room()
        return super().readable()

    def _make_room(self) -> None:
        """Close the connections idle longest with no request being served nor answer being sent (1% of
        them, at least one); they go on the loop's next pass, and accepting resumes."""
        idle = sorted((c for c in self.active_channels.values()
                       if not c.requests and not c.will_close and not c.total_outbufs_len),  # no answer cut short
                      key=lambda channel: channel.last_activity)
        for channel in idle[:max(1, len(idle) // 100)]:
            channel.will_close = True


def create_server(app: Any, settings: Mapping[str, Any], sockets: list[socket.socket] | None = None) -> Any:
    """The guarded waitress server for `app` on HOST:PORT, or on bound `sockets` (not started)."""
    policy = BodyPolicy.from_settings(settings)
    where = {"sockets": sockets} if sockets else {"host": settings["HOST"], "port": settings["PORT"]}
    adj = Adjustments(**where, threads=settings["THREADS"], ident="featurestore",
                      connection_limit=settings["CONNECTION_LIMIT"], channel_timeout=settings["CHANNEL_TIMEOUT_SECONDS"],
                      cleanup_interval=1, asyncore_use_poll=True,  # poll: more than 1024 sockets
                      max_request_body_size=policy.largest + 1)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    common = {"policy": policy, "header_timeout": settings["HEADER_TIMEOUT_SECONDS"], "dispatcher": dispatcher,
              "adj": adj}
    servers = [GuardedServer(app, socket_map, **common, sockinfo=info) for info in adj.listen] if not sockets else \
        [GuardedServer(app, socket_map, **common, _sock=sock, bind_socket=False,
                       sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname())) for sock in sockets]
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(socket_map, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher,
                             log_info=servers[-1].log_info)


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port that other processes may bind too (SO_REUSEPORT: the kernel
    spreads new connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def serve_forever(app: Any, settings: Mapping[str, Any], sockets: list[socket.socket] | None = None) -> None:
    """Run the guarded server until interrupted."""
    sys.setswitchinterval(settings["GIL_SWITCH_SECONDS"])
    server = create_server(app, settings, sockets)
    server.print_listen("Serving on http://{}:{}")
    server.run()
