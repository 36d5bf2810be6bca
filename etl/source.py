"""Locate ETL code in git or over HTTP and record exactly which code it is.

`EtlFetcher.fetch` accepts three forms and returns the source text together with
where it came from (`catalog.base.EtlSource`) and its sha256:

- a local path or ``file://`` URL of a ``.py`` file in a git work tree: the text is
  the blob at ``HEAD``, and a file with uncommitted changes is refused, so the
  recorded commit always reproduces the code;
- ``git+<url>[@<ref>]#<path>`` (or ``repo=``/``ref=``/``path=``): the remote is
  cloned bare into the cache once and fetched on later calls, ``ref`` (a branch, a
  tag or a full or short SHA; default the remote's ``HEAD``) is resolved to a
  commit, and the text is the blob at ``path`` in that commit;
- ``http(s)://…/name.py``: a plain GET, capped at `MAX_SOURCE_BYTES`.

Local paths and ``file://`` are always allowed; every other remote must start
with one of the ``ETL_ALLOWED_REMOTES`` prefixes. A remote URL is checked once by
`etl.remote_url` (ambiguous URLs refused, the host as the HTTP client reads it) and
that checked form is what is compared, fetched and recorded.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

import git
import requests

from catalog.base import EtlSource
from common.errors import InvalidEtl, UpstreamUnavailable
from etl.remote_url import checked_git_remote, checked_http_url, shown_url

try:  # POSIX: also exclude other worker processes sharing the cache directory
    import fcntl
except ImportError:  # pragma: no cover - Windows keeps the in-process lock only
    fcntl = None  # type: ignore[assignment]

MAX_SOURCE_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
ALLOWED_SETTING = "ETL_ALLOWED_REMOTES"
_GIT_SCHEMES = ("file", "http", "https", "ssh", "git")


@dataclass(frozen=True)
class FetchedEtl:
    """ETL source text, where it came from, and the sha256 of its UTF-8 encoding."""

    source: EtlSource
    code: str
    code_sha256: str


def code_sha256(code: str) -> str:
    """The hex sha256 of `code` encoded as UTF-8 (what the catalog records and the runner checks)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


class EtlFetcher:
    """Fetches ETL source from local git work trees, git remotes and HTTP.

    `cache_dir` holds one bare clone per git remote; `allowed_remotes` are URL
    prefixes a non-local remote must match; `timeout` bounds every network call
    (a git command is killed after it, an HTTP download is abandoned after it).
    """

    def __init__(self, cache_dir: Path, allowed_remotes: Sequence[str] = (), timeout: float = 30.0):
        self.cache_dir = Path(cache_dir)
        self.allowed_remotes = tuple(
            _strip_git_prefix(entry.strip()) for entry in allowed_remotes if entry and entry.strip()
        )
        self.timeout = float(timeout)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------------ entry point

    def fetch(
        self,
        etl_path: str | None = None,
        *,
        repo: str | None = None,
        ref: str | None = None,
        path: str | None = None,
    ) -> FetchedEtl:
        """Fetch the ETL named by `etl_path`, or by `repo`/`ref`/`path`; see the module docstring."""
        if repo is not None or path is not None or ref is not None:
            if etl_path is not None:
                raise InvalidEtl("give either etl_path or repo/ref/path, not both")
            if not repo or not path:
                raise InvalidEtl("repo and path are both required", {"repo": repo, "path": path})
            remote = _strip_git_prefix(repo.strip())
            url = f"git+{remote}" + (f"@{ref}" if ref else "") + f"#{path}"
            return self._fetch_git(url, remote, ref or None, path)
        if not etl_path or not etl_path.strip():
            raise InvalidEtl("etl_path is required")
        etl_path = etl_path.strip()
        if etl_path.startswith("git+"):
            remote, parsed_ref, parsed_path = _parse_git_url(etl_path)
            return self._fetch_git(etl_path, remote, parsed_ref, parsed_path)
        scheme = urlsplit(etl_path).scheme.lower() if "://" in etl_path else ""
        if scheme in ("http", "https"):
            return self._fetch_http(etl_path)
        if scheme == "file":
            return self._fetch_local(etl_path, _file_url_to_path(etl_path))
        if scheme:
            raise InvalidEtl(
                f"unsupported ETL location {etl_path!r}: use a local path, file://, "
                "git+<repository url>@<ref>#<path> or an http(s) URL of a .py file",
                {"etl_path": etl_path},
            )
        return self._fetch_local(etl_path, Path(etl_path).expanduser())

    # ------------------------------------------------------------------ local work tree

    def _fetch_local(self, etl_path: str, file_path: Path) -> FetchedEtl:
        details = {"etl_path": etl_path}
        if file_path.suffix != ".py":
            raise InvalidEtl(f"ETL {etl_path!r} is not a .py file", details)
        if not file_path.is_file():
            raise InvalidEtl(f"ETL file {etl_path!r} does not exist", details)
        real = file_path.resolve()
        try:
            work = git.Repo(real.parent, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise InvalidEtl(
                f"ETL file {etl_path!r} is not inside a git repository; commit it to one "
                "so the service can record which code it runs",
                details,
            ) from None
        with work:
            if work.working_tree_dir is None:
                raise InvalidEtl(f"ETL file {etl_path!r} is inside a bare git repository", details)
            root = Path(work.working_tree_dir).resolve()
            try:
                relpath = real.relative_to(root).as_posix()
            except ValueError:
                raise InvalidEtl(f"ETL file {etl_path!r} is outside its git repository {str(root)!r}", details) from None
            try:
                commit = work.head.commit
            except ValueError:
                raise InvalidEtl(f"the git repository {str(root)!r} has no commits yet", details) from None
            ref = "HEAD" if work.head.is_detached else work.head.reference.name
            blob = _blob(commit, relpath, etl_path, untracked_hint=True)
            # Sizes first: a huge (even sparse) work-tree file is refused without reading it.
            same_size = real.stat().st_size == blob.size
            data = blob.data_stream.read() if same_size else b""
            if not same_size or _read_at_most(real, blob.size + 1) != data:
                raise InvalidEtl(
                    f"ETL file {etl_path!r} has uncommitted changes; commit them first so the "
                    f"recorded commit {commit.hexsha[:12]} reproduces the code",
                    {**details, "commit": commit.hexsha, "path": relpath},
                )
            source = EtlSource(kind="git", url=etl_path, repo=str(root), ref=ref, commit=commit.hexsha, path=relpath)
        return _fetched(source, data, etl_path)

    # ------------------------------------------------------------------ git remotes

    def _fetch_git(self, url: str, remote: str, ref: str | None, path: str) -> FetchedEtl:
        shown = shown_url(url)
        relpath = _clean_repo_path(path, shown)
        if ref is not None:
            ref = ref.strip()
            if not ref or ref.startswith("-") or any(c.isspace() or ord(c) < 32 for c in ref):
                raise InvalidEtl(f"invalid git ref {ref!r}", {"etl_path": shown, "ref": ref})
        scheme = urlsplit(remote).scheme.lower() if "://" in remote else ""
        if not scheme:  # repo= given as a local directory
            remote = Path(remote).expanduser().resolve().as_uri()
            scheme = "file"
        if scheme not in _GIT_SCHEMES:
            raise InvalidEtl(
                f"unsupported git remote {shown_url(remote)!r}; use one of: {', '.join(_GIT_SCHEMES)}",
                {"etl_path": shown, "repo": shown_url(remote)},
            )
        if scheme == "file":
            if not _file_url_to_path(remote).is_dir():
                raise InvalidEtl(f"git repository {remote!r} does not exist", {"etl_path": shown, "repo": remote})
        else:  # from here on only the checked form: what is allowed is what git is given and what is recorded
            remote = checked_git_remote(remote)
            self._check_allowed(remote, url)
            shown = f"git+{remote}" + (f"@{ref}" if ref else "") + f"#{relpath}"
        with self._repo_lock(remote) as clone_dir:
            bare = self._update_clone(remote, clone_dir, ref, local=scheme == "file")
            with bare:
                sha = self._resolve(bare, ref or "HEAD", remote, shown)
                data = _blob(bare.commit(sha), relpath, shown, untracked_hint=False).data_stream.read()
        source = EtlSource(kind="git", url=shown, repo=remote, ref=ref or "HEAD", commit=sha, path=relpath)
        return _fetched(source, data, shown)

    @contextmanager
    def _repo_lock(self, remote: str) -> Iterator[Path]:
        """Hold this remote's cache lock: a thread lock, plus a file lock across processes."""
        key = hashlib.sha256(remote.encode("utf-8")).hexdigest()[:16]
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Waiting for another fetch of the same remote counts against this request's time limit:
        # callers queued behind a hung remote fail after `timeout`, not after their turn plus it.
        if not lock.acquire(timeout=self.timeout):
            raise UpstreamUnavailable(f"the git remote {shown_url(remote)} is busy with another fetch that has "
                                      f"not finished within {self.timeout:g} s", {"remote": shown_url(remote)})
        try:
            with open(self.cache_dir / f"{key}.lock", "a+b") as lock_file:
                if fcntl is not None:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
                try:
                    yield self.cache_dir / key
                finally:
                    if fcntl is not None:
                        fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
        finally:
            lock.release()

    def _update_clone(self, remote: str, clone_dir: Path, ref: str | None, local: bool) -> git.Repo:
        """Clone `remote` bare into `clone_dir`, or fetch into it; a cached full SHA needs no network."""
        if clone_dir.is_dir():
            try:
                bare = git.Repo(clone_dir)
            except git.InvalidGitRepositoryError:
                shutil.rmtree(clone_dir)  # a damaged cache entry: clone again
            else:
                if ref is not None and _is_full_sha(ref) and _has_commit(bare, ref):
                    return bare  # a commit never changes
                try:
                    self._git(
                        ["fetch", "--quiet", "--force", "--prune", "--no-write-fetch-head", "origin",
                         "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                        remote, local, cwd=clone_dir,
                    )
                except BaseException:
                    bare.close()
                    raise
                return bare
        # Clone beside the final place and rename, so a failed clone leaves nothing behind.
        staging = Path(tempfile.mkdtemp(prefix=f"{clone_dir.name}.", suffix=".tmp", dir=self.cache_dir))
        try:
            self._git(["clone", "--bare", "--quiet", "--", remote, str(staging / "repo")], remote, local)
            os.replace(staging / "repo", clone_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return git.Repo(clone_dir)

    def _git(self, args: list[str], remote: str, local: bool, cwd: Path | None = None) -> None:
        """Run a git command against `remote`: killed after the timeout, never prompting, safe protocols only."""
        config = ["-c", "protocol.allow=never", "-c", "http.followRedirects=false"]
        for scheme in ("file",) if local else ("http", "https", "ssh", "git"):
            config += ["-c", f"protocol.{scheme}.allow=always"]
        seconds = str(max(1, int(self.timeout)))
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_HTTP_LOW_SPEED_LIMIT": "1", "GIT_HTTP_LOW_SPEED_TIME": seconds}
        if "GIT_SSH_COMMAND" not in os.environ:
            env["GIT_SSH_COMMAND"] = f"ssh -o BatchMode=yes -o ConnectTimeout={seconds}"
        runner = git.Git(str(cwd) if cwd else None)
        try:
            runner.execute(
                [runner.GIT_PYTHON_GIT_EXECUTABLE or "git", *config, *args],
                kill_after_timeout=self.timeout,
                env=env,
            )
        except git.GitCommandError as exc:
            shown = shown_url(remote)
            stderr = _stderr_text(exc).replace(remote, shown)
            if stderr.startswith("Timeout:"):  # GitPython's message repeats the whole command
                stderr = f"no answer within {self.timeout:g} s (git {args[0]} was stopped)"
            details = {"repo": shown, "stderr": stderr}
            if local:
                raise InvalidEtl(f"cannot read the git repository {shown!r}: {stderr}", details) from None
            raise UpstreamUnavailable(f"git remote {shown!r} is unavailable: {stderr}", details) from None

    def _resolve(self, bare: git.Repo, ref: str, remote: str, shown: str) -> str:
        """The commit SHA `ref` (branch, tag, full or short SHA) names in the clone, or InvalidEtl."""
        try:
            return bare.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
        except git.GitCommandError:
            raise InvalidEtl(
                f"unknown ref {ref!r} in {shown_url(remote)!r}: not a branch, tag or commit",
                {"etl_path": shown, "repo": shown_url(remote), "ref": ref},
            ) from None

    # ------------------------------------------------------------------ HTTP

    def _fetch_http(self, url: str) -> FetchedEtl:
        shown = shown_url(url)
        current = checked_http_url(url)  # what `requests` sends: the allow-list sees the host it connects to
        if not urlsplit(current).path.endswith(".py"):
            raise InvalidEtl(f"ETL URL {shown!r} does not name a .py file", {"etl_path": shown})
        self._check_allowed(current, url)
        deadline = time.monotonic() + self.timeout
        try:
            with requests.Session() as session:
                current, data = self._get_following_redirects(session, current, url, deadline)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise UpstreamUnavailable(
                f"ETL URL {shown!r} is unavailable ({type(exc).__name__})",
                {"etl_path": shown, "error": str(exc).replace(url, shown)},
            ) from None
        except requests.RequestException as exc:
            raise InvalidEtl(f"cannot fetch ETL URL {shown!r}: {exc}", {"etl_path": shown}) from None
        return _fetched(EtlSource(kind="http", url=current), data, shown)  # the URL the code was read from

    def _get_following_redirects(self, session: requests.Session, current: str, url: str,
                                 deadline: float) -> tuple[str, bytes]:
        """(the URL read, its body) from checked URL `current`, redirects followed by hand: every hop is
        checked and must be allowed; `url` is what the caller gave (for messages)."""
        shown = shown_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            with self._get(session, current) as response:
                if response.is_redirect:
                    current = checked_http_url(urljoin(current, response.headers["location"]))
                    self._check_allowed(current, url)
                    continue
                status = response.status_code
                if status != 200:
                    error = UpstreamUnavailable if status >= 500 else InvalidEtl
                    raise error(f"ETL URL {shown_url(current)!r} answered HTTP {status}",
                                {"etl_path": shown, "status": status})
                return current, _read_capped(response, shown, deadline)
        raise InvalidEtl(f"ETL URL {shown!r} redirects more than {MAX_REDIRECTS} times", {"etl_path": shown})

    def _get(self, session: requests.Session, url: str) -> requests.Response:
        """GET exactly `url` (prepared once, sent as prepared), streaming, redirects not followed."""
        request = requests.Request("GET", url).prepare()
        if request.url != url:  # a checked URL prepares to itself; anything else is not what was checked
            raise InvalidEtl(f"ETL URL {url!r} is not in the form it is sent in", {"etl_path": url})
        settings = session.merge_environment_settings(url, {}, True, None, None)
        return session.send(request, timeout=self.timeout, allow_redirects=False, **settings)

    # ------------------------------------------------------------------ allow-list

    def _check_allowed(self, remote: str, etl_path: str) -> None:
        """Refuse a checked non-local remote unless it starts with an ETL_ALLOWED_REMOTES prefix."""
        parts = urlsplit(remote)
        segments = unquote(parts.path).split("/")
        if "." in segments or ".." in segments or "\\" in unquote(parts.path):
            raise InvalidEtl(
                f"remote {shown_url(remote)!r} is not allowed: '.' and '..' path segments could escape "
                f"the {ALLOWED_SETTING} prefixes",
                {"etl_path": shown_url(etl_path), "remote": shown_url(remote), "setting": ALLOWED_SETTING},
            )
        candidate = _allow_key(remote)
        for prefix in self.allowed_remotes:
            allowed = _allow_key(prefix)
            if candidate == allowed:
                return
            if candidate.startswith(allowed) and (allowed.endswith("/") or candidate[len(allowed)] in "/?#@"):
                return
        raise InvalidEtl(
            f"remote {shown_url(remote)!r} is not allowed; add a prefix of it to the "
            f"{ALLOWED_SETTING} setting",
            {"etl_path": shown_url(etl_path), "remote": shown_url(remote), "setting": ALLOWED_SETTING},
        )


# ---------------------------------------------------------------------- helpers


def _fetched(source: EtlSource, data: bytes, etl_path: str) -> FetchedEtl:
    if len(data) > MAX_SOURCE_BYTES:
        raise InvalidEtl(f"ETL source {etl_path!r} is larger than {MAX_SOURCE_BYTES} bytes", {"etl_path": etl_path})
    try:
        code = data.decode("utf-8-sig")  # a leading BOM would not compile
    except UnicodeDecodeError as exc:
        raise InvalidEtl(
            f"ETL source {etl_path!r} is not UTF-8 text", {"etl_path": etl_path, "byte_offset": exc.start}
        ) from None
    return FetchedEtl(source=source, code=code, code_sha256=code_sha256(code))


def _blob(commit: git.Commit, relpath: str, etl_path: str, untracked_hint: bool) -> git.Blob:
    """The blob of file `relpath` in `commit`, at most MAX_SOURCE_BYTES (checked before reading), or InvalidEtl."""
    try:
        item = commit.tree / relpath
    except KeyError:
        item = None
    if item is None or item.type != "blob":
        message = (
            f"ETL file {relpath!r} is not committed (untracked) at {commit.hexsha[:12]}; commit it first"
            if untracked_hint
            else f"no file {relpath!r} at commit {commit.hexsha[:12]}"
        )
        raise InvalidEtl(message, {"etl_path": etl_path, "commit": commit.hexsha, "path": relpath})
    if item.size > MAX_SOURCE_BYTES:
        raise InvalidEtl(f"ETL source {etl_path!r} is larger than {MAX_SOURCE_BYTES} bytes", {"etl_path": etl_path})
    return item


def _read_at_most(path: Path, size: int) -> bytes:
    """The first `size` bytes of `path` (never more, whatever the file has become since its size was checked)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def _parse_git_url(etl_path: str) -> tuple[str, str | None, str]:
    """Split ``git+<url>[@<ref>]#<path>`` like pip: the ref follows the last '@' in the URL path."""
    body = etl_path[len("git+"):]
    body, sep, path = body.partition("#")
    if not sep or not path:
        raise InvalidEtl(
            f"{etl_path!r} names no file: write git+<repository url>@<ref>#<path/in/repo.py>",
            {"etl_path": etl_path},
        )
    parts = urlsplit(body)
    if not parts.scheme or "://" not in body:
        raise InvalidEtl(f"{etl_path!r} is not a git+<scheme>://… URL", {"etl_path": etl_path})
    ref = None
    if "@" in parts.path:
        repo_path, ref = parts.path.rsplit("@", 1)
        body = urlunsplit(parts._replace(path=repo_path))
        if not ref:
            raise InvalidEtl(f"{etl_path!r} has an empty ref after '@'", {"etl_path": etl_path})
    return body, ref, path


def _clean_repo_path(path: str, etl_path: str) -> str:
    """A normalized posix path inside the repository, ending in .py."""
    raw = path.strip().replace("\\", "/")
    normalized = posixpath.normpath(raw) if raw else ""
    if not raw or raw.startswith("/") or normalized.startswith("..") or normalized == ".":
        raise InvalidEtl(f"invalid path {path!r} inside the repository", {"etl_path": etl_path, "path": path})
    if PurePosixPath(normalized).suffix != ".py":
        raise InvalidEtl(f"ETL path {path!r} is not a .py file", {"etl_path": etl_path, "path": path})
    return normalized


def _file_url_to_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidEtl(f"file URL {url!r} names a remote host", {"etl_path": url})
    return Path(url2pathname(unquote(parts.path)))


def _strip_git_prefix(url: str) -> str:
    return url[len("git+"):] if url.startswith("git+") else url


def _allow_key(url: str) -> str:
    """What the allow-list compares: scheme and host lower-cased, user info dropped."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=host))


def _is_full_sha(ref: str) -> bool:
    return len(ref) in (40, 64) and all(c in "0123456789abcdef" for c in ref.lower())


def _has_commit(bare: git.Repo, sha: str) -> bool:
    try:
        bare.git.cat_file("-e", f"{sha}^{{commit}}")
        return True
    except git.GitCommandError:
        return False


def _read_capped(response: requests.Response, url: str, deadline: float) -> bytes:
    """The body, refusing more than MAX_SOURCE_BYTES and giving up at `deadline`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SOURCE_BYTES:
        raise InvalidEtl(f"ETL source {url!r} is larger than {MAX_SOURCE_BYTES} bytes", {"etl_path": url})
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 * 1024):
        body += chunk
        if len(body) > MAX_SOURCE_BYTES:
            raise InvalidEtl(f"ETL source {url!r} is larger than {MAX_SOURCE_BYTES} bytes", {"etl_path": url})
        if time.monotonic() > deadline:
            raise UpstreamUnavailable(f"ETL URL {url!r} did not finish sending in time", {"etl_path": url})
    return bytes(body)


def _stderr_text(exc: git.GitCommandError) -> str:
    stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    text = "; ".join(line.removeprefix("stderr: ").strip("'") for line in lines)
    return text or f"git exited with status {exc.status}"
