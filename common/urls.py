"""Backend URLs: a scheme picks a builder; `dialect+driver` reduces to the dialect."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from common.errors import InvalidInput

T = TypeVar("T")


def url_scheme(url: str) -> str:
    """The dialect of a backend URL: ``postgresql+psycopg://…`` → ``postgresql``."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise InvalidInput(f"not a backend URL: {url!r}")
    return scheme.split("+", 1)[0].lower()


def sqlalchemy_url(url: str) -> str:
    """Point plain ``postgresql://`` URLs at psycopg 3, the driver we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def backend_registry(setting: str, builders: dict[str, Callable[..., T]]) -> Callable[..., T]:
    """A function that opens a backend from its URL, failing clearly on an unknown scheme.

    Keyword options (e.g. ``statement_timeout=30.0``) go to the builder unchanged: ``builder(url, **options)``.
    """

    def open_backend(url: str, **options: Any) -> T:
        scheme = url_scheme(url)
        if scheme == "postgres":
            scheme = "postgresql"
        builder = builders.get(scheme)
        if builder is None:
            known = ", ".join(sorted(builders))
            raise InvalidInput(f"{setting}: unknown scheme {scheme!r} in {url!r}; known: {known}")
        return builder(url, **options)

    return open_backend


def duckdb_path(url: str) -> str:
    """The file of a ``duckdb:///relative`` or ``duckdb:////absolute`` URL, or ``:memory:``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    path = rest[1:] if rest.startswith("/") else rest
    return path or ":memory:"
