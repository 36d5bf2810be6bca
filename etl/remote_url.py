"""Remote ETL URLs, checked once and rebuilt in the one form that is fetched, checked and recorded.

Two parsers that disagree about a URL are how an allow-list is bypassed: in
``http://EVIL\\@ALLOWED/x.py`` Python's `urlsplit` sees the host ``ALLOWED`` while
urllib3 (which `requests` fetches with) ends the host at the backslash and connects
to ``EVIL``. So a remote URL is refused unless it is unambiguous — printable ASCII
only (no control characters, spaces, backslashes or non-ASCII/IDNA text), no user
info (except a plain user name for ``ssh://``), and a canonical host: lower-case DNS
labels, a dotted-quad IPv4 address or a compressed IPv6 address; no percent-encoding,
trailing dot, or decimal, octal, hex or shortened IPv4 forms. The host and port must
also be exactly what urllib3 reads. An HTTP URL is then prepared by `requests` itself:
that prepared URL is what the allow-list compares, what is sent and what is recorded.
"""
from __future__ import annotations

import ipaddress
import re

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from common.errors import InvalidEtl

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SSH_USER = re.compile(r"[A-Za-z0-9._-]+")


def checked_http_url(url: str) -> str:
    """`url` as `requests` sends it (``http(s)://host[:port]/path[?query]``), or InvalidEtl if ambiguous."""
    scheme, user, host, port, rest = _split(url, ("http", "https"))
    if user is not None:
        raise _refused(url, "user info (user:password@) is not accepted in an HTTP URL; serve the file "
                            "without credentials or use a git remote with a credential helper")
    path = rest.split("#", 1)[0]
    try:
        prepared = requests.Request("GET", f"{scheme}://{host}{_port(port)}{path}").prepare().url
        parsed = parse_url(prepared)
    except (requests.RequestException, LocationParseError, ValueError) as error:
        raise _refused(url, f"it does not parse ({type(error).__name__})") from None
    if parsed.host != host or parsed.port != port or parsed.scheme != scheme or parsed.auth is not None:
        raise _refused(url, "the HTTP client would read another host from it")
    return prepared


def checked_git_remote(url: str) -> str:
    """A git remote URL rebuilt from its checked parts (``scheme://[user@]host[:port]/path``), or InvalidEtl."""
    scheme, user, host, port, rest = _split(url, ("http", "https", "ssh", "git"))
    if user is not None and (scheme != "ssh" or not _SSH_USER.fullmatch(user)):
        raise _refused(url, "user info is accepted only as a plain user name in ssh:// remotes; give "
                            "HTTP credentials through a git credential helper, not the URL")
    if "?" in rest or "#" in rest:
        raise _refused(url, "a git remote has no query or fragment")
    return f"{scheme}://{user + '@' if user else ''}{host}{_port(port)}{rest}"


def shown_url(url: str) -> str:
    """`url` fit for a message: user info replaced by ``***`` (a plain ssh user name kept)."""
    prefix, body = ("git+", url[4:]) if url.startswith("git+") else ("", url)
    scheme, sep, after = body.partition("://")
    if not sep:
        return url
    authority, rest = _authority(after)
    if "@" not in authority:
        return url
    userinfo, host = authority.rsplit("@", 1)
    keep = scheme.lower() == "ssh" and _SSH_USER.fullmatch(userinfo)
    return f"{prefix}{scheme}://{userinfo if keep else '***'}@{host}{rest}"


def _split(url: str, schemes: tuple[str, ...]) -> tuple[str, str | None, str, int | None, str]:
    """(scheme, user, canonical host, port, path and the rest) of an unambiguous URL, or InvalidEtl."""
    bad = next((c for c in url if not "\x21" <= c <= "\x7e" or c == "\\"), None)
    if bad is not None:
        raise _refused(url, f"it contains {bad!r}; only printable ASCII without backslashes is accepted")
    scheme, sep, after = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in schemes:
        raise _refused(url, f"the scheme must be one of {', '.join(schemes)}")
    authority, rest = _authority(after)
    user = None
    if "@" in authority:
        user, authority = authority.rsplit("@", 1)
        if "@" in user or ":" in user or not user:
            raise _refused(url, "user info (user:password@) is not accepted")
    if "%" in authority:
        raise _refused(url, "percent-encoding in the host is not accepted")
    raw_host, port = _host_and_port(url, authority)
    host = _canonical_host(raw_host)
    if host is None:
        raise _refused(url, f"the host {raw_host!r} is not canonical (a lower-case DNS name without a trailing "
                            "dot, a dotted-quad IPv4 or a compressed [IPv6] address)")
    try:
        parsed = parse_url(url)
    except LocationParseError:
        raise _refused(url, "it does not parse") from None
    if (parsed.host or "").lower() != host or parsed.port != port:  # urllib3 lower-cases only http(s) hosts
        raise _refused(url, "the HTTP client would read another host from it")
    return scheme, user, host, port, rest if rest.startswith("/") else "/" + rest


def _authority(after_scheme: str) -> tuple[str, str]:
    """Split ``host…/path`` where urllib3 ends the authority: at the first '/', '?', '#' or backslash
    (RFC 3986 does not end it at a backslash, but a URL with one is refused anyway)."""
    end = min((i for i in (after_scheme.find(c) for c in "/?#\\") if i >= 0), default=len(after_scheme))
    return after_scheme[:end], after_scheme[end:]


def _host_and_port(url: str, authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        host, bracket, tail = authority.partition("]")
        host += bracket
    else:
        host, colon, port = authority.partition(":")
        tail = colon + port
    if not tail:
        return host, None
    digits = tail[1:]
    if not tail.startswith(":") or not digits.isdigit() or digits.startswith("0") or not 0 < int(digits) < 65536:
        raise _refused(url, f"the port {tail[1:]!r} is not a port number")
    return host, int(digits)


def _canonical_host(raw: str) -> str | None:
    """`raw` lower-cased if it is a canonical host name or address, else None."""
    host = raw.lower()
    if host.startswith("[") and host.endswith("]"):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return host if address.compressed == host[1:-1] else None
    labels = host.split(".")
    if all(label.isdigit() for label in labels):  # numeric: only the dotted quad, never 2130706433 or 0177.1
        try:
            return host if str(ipaddress.IPv4Address(host)) == host else None
        except ValueError:
            return None
    if not all(_LABEL.fullmatch(label) for label in labels) or not labels[-1][0].isalpha():
        return None  # an empty label (trailing dot), '_', or a last label such as 0x7f read as a number
    return host


def _port(port: int | None) -> str:
    return "" if port is None else f":{port}"


def _refused(url: str, why: str) -> InvalidEtl:
    return InvalidEtl(f"remote URL {shown_url(url)!r} is refused: {why}", {"etl_path": shown_url(url)})
