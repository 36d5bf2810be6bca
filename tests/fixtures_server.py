"""The live-server fixture: a `python -m app` process (tests/server_process.py) started once per module."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.server_process import LiveProcess, free_port, live_process, running_server

__all__ = ["LiveProcess", "free_port", "live_process", "live_server", "running_server"]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:<port>``) of a service shared by the module's tests."""
    with running_server(tmp_path_factory.mktemp("live-server") / "data") as base:
        yield base
