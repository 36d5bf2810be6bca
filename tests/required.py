"""What a test needs from the machine: missing, it skips — except under ``CI=true``, where it fails."""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI = os.environ.get("CI", "").lower() == "true"


def missing(what: str, message: str) -> NoReturn:
    """Skip the test because `what` is missing (`message` says why), or fail it under CI=true."""
    if CI:
        pytest.fail(f"CI=true requires {what}: {message}", pytrace=False)
    pytest.skip(message)
