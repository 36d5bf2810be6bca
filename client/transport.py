"""HTTP to the service: one session, a timeout on every call, retries only where the caller says safe."""
from __future__ import annotations

import time
from typing import Any

import requests

from client.errors import ServiceTimeout, ServiceUnreachable, UnexpectedResponse, error_from_response

API_PREFIX = "/v1.0"
RETRY_STATUSES = frozenset({502, 503, 504})


def api_root(url: str) -> str:
    """``http://host:port[/v1.0][/]`` → ``http://host:port/v1.0``."""
    base = url.rstrip("/")
    if base.endswith(API_PREFIX):
        base = base[: -len(API_PREFIX)].rstrip("/")
    return base + API_PREFIX


class Transport:
    """Sends JSON requests and returns JSON bodies, raising the client's errors.

    A call with ``retry=True`` (reads and idempotent writes) is tried up to
    ``1 + retries`` times, sleeping ``backoff * 2**n`` seconds between tries, when
    the connection fails or the answer is 502/503/504. A 4xx is never retried,
    nor is a read timeout: the service got the request and is still busy, so a
    retry would only pile on; `timeout` therefore bounds each call's wait.
    """

    def __init__(self, url: str, api_key: str | None, timeout: float, retries: int, backoff: float):
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError("timeout must be positive, retries and backoff not negative")
        self.root = api_root(url)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "featurestore-client"})
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, *, retry: bool, params: dict[str, Any] | None = None,
             body: Any = None, content_type: str | None = None) -> Any:
        """The JSON body of a 2xx answer to `method` `path`; an error otherwise.

        `body` is sent as JSON, or as it is (bytes) with a `content_type`.
        """
        url = self.root + path
        attempts = 1 + (self.retries if retry else 0)
        payload = {"json": body} if content_type is None else {"data": body, "headers": {"Content-Type": content_type}}
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, url, params=params, timeout=self.timeout, **payload)
            except requests.ConnectionError as exc:  # refused, reset, DNS, connect timeout
                if attempt < attempts:
                    self._sleep(attempt)
                    continue
                raise ServiceUnreachable(f"{method} {url}: no connection after {attempt} attempt(s): {exc}",
                                         attempt, exc) from exc
            except requests.Timeout as exc:
                raise ServiceTimeout(f"{method} {url}: no response within {self.timeout} s "
                                     "(the request may still be running on the service)", attempt, exc) from exc
            if response.status_code in RETRY_STATUSES and attempt < attempts:
                response.close()
                self._sleep(attempt)
                continue
            return _payload(response)
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * 2 ** (attempt - 1))

    def close(self) -> None:
        self.session.close()


ARROW_STREAM = "application/vnd.apache.arrow.stream"


def _payload(response: requests.Response) -> Any:
    if not response.ok:
        raise error_from_response(response)
    if response.headers.get("Content-Type", "").startswith(ARROW_STREAM):
        import pyarrow as pa  # only clients that ask for Arrow need pyarrow

        return pa.ipc.open_stream(response.content).read_all(), response.headers
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(response.status_code, response.text[:2000],
                                 response.headers.get("Content-Type", "")) from None
