"""HTTP to the service: one session, a timeout on every call, retries only where the caller says safe."""
from __future__ import annotations

import json
import time
from typing import Any

import requests

from client.errors import (IncompleteStream, ServiceTimeout, ServiceUnreachable, UnexpectedResponse, error_from_body,
                           error_from_response)

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
            except requests.exceptions.ChunkedEncodingError as exc:  # the body was cut: the call happened
                raise IncompleteStream(f"{method} {url}: the response was cut: {exc}", 0) from exc
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
        return read_arrow_stream(response.content), response.headers
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponse(response.status_code, response.text[:2000],
                                 response.headers.get("Content-Type", "")) from None


END_KEY = "featurestore.end"  # app/arrowio.py: custom metadata of the empty batch that ends every stream


def read_arrow_stream(data: bytes) -> Any:
    """The rows of an Arrow stream from the service, as a pyarrow Table, once its end marker says it is whole.

    The status (200) was sent before the rows, so the service ends every stream with an empty batch
    whose metadata says "ok" or carries the error that stopped it: that error is raised here, and a
    stream without the marker (the connection was cut) raises IncompleteStream.
    """
    import pyarrow as pa  # only clients that ask for Arrow need pyarrow

    batches: list[Any] = []
    end = None
    try:
        reader = pa.ipc.open_stream(data)
        while True:
            try:
                batch, metadata = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                break
            if metadata is not None and END_KEY.encode() in metadata:
                end = json.loads(metadata[END_KEY.encode()])
            elif end is None:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError) as exc:  # cut inside a message
        raise IncompleteStream(f"the Arrow stream was cut after {sum(b.num_rows for b in batches)} rows: {exc}",
                               sum(b.num_rows for b in batches)) from None
    rows = sum(batch.num_rows for batch in batches)
    if end is None:
        raise IncompleteStream(f"the Arrow stream ended after {rows} rows without its end marker "
                               "(the connection was cut)", rows)
    if end.get("status") != "ok":
        raise error_from_body(end.get("error") or {"code": "internal_error", "message": "the stream failed"},
                              int(end.get("http_status") or 500))
    return pa.Table.from_batches(batches, schema=reader.schema)
