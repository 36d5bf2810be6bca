"""EtlFetcher: local work trees, git remotes (file:// and dumb HTTP on loopback), plain HTTP."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from common.errors import InvalidEtl, UpstreamUnavailable
from etl.source import MAX_SOURCE_BYTES, EtlFetcher, FetchedEtl
from tests.fixtures_git import BROKEN_ETL, FEATURES_ETL, LEGACY_ETL, EtlRepo


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def fetcher(tmp_path: Path) -> EtlFetcher:
    return EtlFetcher(tmp_path / "cache", timeout=10)


# ---------------------------------------------------------------------- loopback servers


class _Routes(http.server.BaseHTTPRequestHandler):
    """Answers from the server's `routes`: path -> (status, headers, body)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status, headers, body = self.server.routes.get(self.path, (404, {}, b"not found"))  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _serve(server: http.server.ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def http_server():
    """A loopback HTTP server; set ``server.routes[path] = (status, headers, body)``."""
    yield from _http_server()


@pytest.fixture
def evil_server():
    """A second loopback HTTP server, the one an allow-list bypass would reach."""
    yield from _http_server()


def _http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Routes)
    server.routes = {}  # type: ignore[attr-defined]
    server.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def git_http(tmp_path: Path, etl_repo: EtlRepo):
    """`etl_repo` pushed to a bare repository served over dumb HTTP at ``<base>/acme/etls.git``."""
    root = tmp_path / "served"
    bare = root / "acme" / "etls.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(etl_repo.path), str(bare)], check=True)
    subprocess.run(["git", "update-server-info"], cwd=bare, check=True)

    class Static(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Static)
    server.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    server.url = f"{server.base}/acme/etls.git"  # type: ignore[attr-defined]
    server.bare = bare  # type: ignore[attr-defined]
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections (via the backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


# ---------------------------------------------------------------------- local work tree


def assert_fetched(fetched: FetchedEtl, code: str) -> None:
    assert fetched.code == code
    assert fetched.code_sha256 == sha256(code)


def test_local_path_records_the_head_commit(fetcher, etl_repo):
    etl_path = str(etl_repo.file("etls/features.py"))
    fetched = fetcher.fetch(etl_path)
    assert_fetched(fetched, FEATURES_ETL)
    source = fetched.source
    assert (source.kind, source.url, source.ref, source.path) == ("git", etl_path, "main", "etls/features.py")
    assert source.repo == str(etl_repo.path.resolve())
    assert source.commit == etl_repo.head_sha


def test_file_url(fetcher, etl_repo):
    url = etl_repo.file("etls/legacy.py").as_uri()
    fetched = fetcher.fetch(url)
    assert_fetched(fetched, LEGACY_ETL)
    assert (fetched.source.url, fetched.source.path, fetched.source.commit) == (url, "etls/legacy.py", etl_repo.head_sha)


def test_relative_local_path(fetcher, etl_repo, monkeypatch):
    monkeypatch.chdir(etl_repo.path / "etls")
    fetched = fetcher.fetch("broken.py")
    assert_fetched(fetched, BROKEN_ETL)
    assert fetched.source.path == "etls/broken.py"


def test_detached_head_is_recorded_as_HEAD(fetcher, etl_repo):
    etl_repo.commit("etls/features.py", FEATURES_ETL + "# v2\n", "v2")
    etl_repo.repo.git.checkout("--quiet", "v1")
    fetched = fetcher.fetch(str(etl_repo.file("etls/features.py")))
    assert (fetched.source.ref, fetched.source.commit) == ("HEAD", etl_repo.v1_sha)
    assert_fetched(fetched, FEATURES_ETL)


def test_local_fetch_follows_new_commits(fetcher, etl_repo):
    sha = etl_repo.commit("etls/features.py", FEATURES_ETL + "# v2\n", "v2")
    fetched = fetcher.fetch(str(etl_repo.file("etls/features.py")))
    assert fetched.source.commit == sha != etl_repo.v1_sha
    assert fetched.code.endswith("# v2\n")


def test_uncommitted_change_is_refused(fetcher, etl_repo):
    etl_repo.file("etls/features.py").write_text(FEATURES_ETL + "x = 1\n")
    with pytest.raises(InvalidEtl, match="uncommitted changes") as caught:
        fetcher.fetch(str(etl_repo.file("etls/features.py")))
    assert caught.value.status == 400
    assert caught.value.details["commit"] == etl_repo.head_sha


def test_huge_sparse_uncommitted_file_is_refused_without_reading_it(fetcher, etl_repo):
    """Security 9: a 1 TiB sparse work-tree file is refused on its size, not read in full first."""
    with open(etl_repo.file("etls/features.py"), "r+b") as handle:
        handle.truncate(1 << 40)  # sparse: no disk, but reading it would need 1 TiB of memory
    with pytest.raises(InvalidEtl, match="uncommitted changes"):
        fetcher.fetch(str(etl_repo.file("etls/features.py")))


def test_same_size_uncommitted_change_is_refused(fetcher, etl_repo):
    etl_repo.file("etls/features.py").write_text(FEATURES_ETL.replace("ios", "IOS"))
    with pytest.raises(InvalidEtl, match="uncommitted changes"):
        fetcher.fetch(str(etl_repo.file("etls/features.py")))


@pytest.mark.parametrize("stage", [False, True], ids=["untracked", "staged-only"])
def test_uncommitted_file_is_refused(fetcher, etl_repo, stage):
    etl_repo.file("etls/new.py").write_text(FEATURES_ETL)
    if stage:
        etl_repo.repo.git.add("etls/new.py")
    with pytest.raises(InvalidEtl, match="not committed"):
        fetcher.fetch(str(etl_repo.file("etls/new.py")))


def test_file_outside_any_repository_is_refused(fetcher, tmp_path):
    outside = tmp_path / "loose" / "etl.py"
    outside.parent.mkdir()
    outside.write_text(FEATURES_ETL)
    with pytest.raises(InvalidEtl, match="not inside a git repository"):
        fetcher.fetch(str(outside))


def test_symlink_out_of_the_repository_is_refused(fetcher, etl_repo, tmp_path):
    outside = tmp_path / "loose.py"
    outside.write_text(FEATURES_ETL)
    link = etl_repo.file("etls/link.py")
    link.symlink_to(outside)
    etl_repo.repo.git.add("etls/link.py")
    etl_repo.repo.git.commit("--quiet", "-m", "link")
    with pytest.raises(InvalidEtl, match="not inside a git repository"):
        fetcher.fetch(str(link))


@pytest.mark.parametrize(
    "relpath, message",
    [("etls/missing.py", "does not exist"), ("etls/notes.txt", "not a .py file"), ("etls", "not a .py file")],
)
def test_bad_local_paths(fetcher, etl_repo, relpath, message):
    (etl_repo.path / "etls" / "notes.txt").write_text("hi")
    with pytest.raises(InvalidEtl, match=message):
        fetcher.fetch(str(etl_repo.path / relpath))


def test_non_utf8_source_is_refused(fetcher, etl_repo):
    etl_repo.file("etls/latin1.py").write_bytes("x = 'café'\n".encode("latin-1"))
    etl_repo.repo.git.add("etls/latin1.py")
    etl_repo.repo.git.commit("--quiet", "-m", "latin-1")
    with pytest.raises(InvalidEtl, match="not UTF-8"):
        fetcher.fetch(str(etl_repo.file("etls/latin1.py")))


def test_utf8_bom_is_dropped(fetcher, etl_repo):
    etl_repo.file("etls/bom.py").write_bytes(b"\xef\xbb\xbf" + FEATURES_ETL.encode())
    etl_repo.repo.git.add("etls/bom.py")
    etl_repo.repo.git.commit("--quiet", "-m", "bom")
    assert_fetched(fetcher.fetch(str(etl_repo.file("etls/bom.py"))), FEATURES_ETL)


# ---------------------------------------------------------------------- git remotes


@pytest.mark.parametrize("ref", ["main", "v1", None, "FULL_SHA", "SHORT_SHA"])
def test_git_url_refs(fetcher, etl_repo, ref):
    etl_repo.commit("etls/features.py", FEATURES_ETL + "# v2\n", "v2")  # main moves past v1
    ref = {"FULL_SHA": etl_repo.v1_sha, "SHORT_SHA": etl_repo.v1_sha[:8]}.get(ref, ref)
    url = etl_repo.git_url("etls/features.py", ref)
    fetched = fetcher.fetch(url)
    expected_sha = etl_repo.head_sha if ref in ("main", None) else etl_repo.v1_sha
    assert fetched.source.commit == expected_sha
    assert fetched.code == (FEATURES_ETL + "# v2\n" if ref in ("main", None) else FEATURES_ETL)
    assert fetched.code_sha256 == sha256(fetched.code)
    assert fetched.source.kind == "git"
    assert fetched.source.url == url
    assert fetched.source.repo == etl_repo.path.as_uri()
    assert fetched.source.ref == (ref or "HEAD")
    assert fetched.source.path == "etls/features.py"


def test_keyword_form_equals_the_url_form(fetcher, etl_repo):
    by_url = fetcher.fetch(etl_repo.git_url("etls/legacy.py", "v1"))
    by_keywords = fetcher.fetch(repo=etl_repo.path.as_uri(), ref="v1", path="etls/legacy.py")
    assert by_keywords.code_sha256 == by_url.code_sha256
    assert by_keywords.source == by_url.source
    local_dir = fetcher.fetch(repo=str(etl_repo.path), path="etls/legacy.py")
    assert local_dir.source.repo == etl_repo.path.resolve().as_uri()
    assert local_dir.source.commit == etl_repo.v1_sha


def test_fetch_sees_new_commits_and_reuses_the_clone(fetcher, etl_repo, tmp_path):
    url = etl_repo.git_url("etls/features.py", "main")
    first = fetcher.fetch(url)
    new_sha = etl_repo.commit("etls/features.py", FEATURES_ETL + "# v2\n", "v2")
    second = fetcher.fetch(url)
    assert first.source.commit == etl_repo.v1_sha
    assert second.source.commit == new_sha
    assert second.code.endswith("# v2\n")
    clones = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert [p.name for p in clones] == [hashlib.sha256(etl_repo.path.as_uri().encode()).hexdigest()[:16]]


def test_moved_tag_and_deleted_branch_are_followed(fetcher, etl_repo):
    fetcher.fetch(etl_repo.git_url("etls/features.py", "v1"))
    etl_repo.repo.git.branch("feature/x")
    new_sha = etl_repo.commit("etls/features.py", FEATURES_ETL + "# v2\n", "v2")
    etl_repo.repo.git.tag("--force", "v1")
    assert fetcher.fetch(etl_repo.git_url("etls/features.py", "v1")).source.commit == new_sha
    assert fetcher.fetch(etl_repo.git_url("etls/features.py", "feature/x")).source.commit == etl_repo.v1_sha
    etl_repo.repo.git.branch("-D", "feature/x")
    with pytest.raises(InvalidEtl, match="unknown ref"):
        fetcher.fetch(etl_repo.git_url("etls/features.py", "feature/x"))


@pytest.mark.parametrize("ref", ["nope", "0" * 40, "deadbeef", "v1:etls/features.py"])
def test_unknown_ref(fetcher, etl_repo, ref):
    with pytest.raises(InvalidEtl, match="unknown ref") as caught:
        fetcher.fetch(etl_repo.git_url("etls/features.py", ref))
    assert caught.value.details["ref"] == ref


@pytest.mark.parametrize("ref", ["-c", "--upload-pack=touch", "a b"])
def test_option_like_or_blank_ref_is_refused(fetcher, etl_repo, ref):
    with pytest.raises(InvalidEtl, match="invalid git ref"):
        fetcher.fetch(repo=etl_repo.path.as_uri(), ref=ref, path="etls/features.py")


def test_unknown_path(fetcher, etl_repo):
    with pytest.raises(InvalidEtl, match="no file 'etls/nope.py' at commit"):
        fetcher.fetch(etl_repo.git_url("etls/nope.py", "main"))
    etl_repo.commit("etls/pkg.py/inner.py", "x = 1\n", "a directory named like a module")
    with pytest.raises(InvalidEtl, match="no file 'etls/pkg.py' at commit"):  # a directory is not a file
        fetcher.fetch(repo=etl_repo.path.as_uri(), path="etls/./pkg.py")


@pytest.mark.parametrize("path", ["../secret.py", "/etc/x.py", "etls/notes.txt", ""])
def test_bad_repository_paths(fetcher, etl_repo, path):
    with pytest.raises(InvalidEtl):
        fetcher.fetch(repo=etl_repo.path.as_uri(), path=path)


def test_git_file_to_a_missing_repository_is_a_bad_request(fetcher, tmp_path):
    # Decision: a local repository that does not exist is the caller's mistake (400),
    # not an unavailable upstream (502).
    with pytest.raises(InvalidEtl, match="does not exist") as caught:
        fetcher.fetch(f"git+{(tmp_path / 'nowhere').as_uri()}@main#etls/features.py")
    assert caught.value.status == 400


def test_git_file_to_a_directory_that_is_not_a_repository(fetcher, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidEtl, match="cannot read the git repository"):
        fetcher.fetch(f"git+{(tmp_path / 'plain').as_uri()}#etls/features.py")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # no half clone left


def test_concurrent_first_fetches_share_one_clone(fetcher, etl_repo):
    url = etl_repo.git_url("etls/features.py", "main")
    results, errors = [], []

    def fetch() -> None:
        try:
            results.append(fetcher.fetch(url).source.commit)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [etl_repo.head_sha] * 6


def test_damaged_cache_entry_is_recloned(fetcher, etl_repo, tmp_path):
    url = etl_repo.git_url("etls/features.py")
    fetcher.fetch(url)
    clone = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    shutil.rmtree(clone)
    clone.mkdir()
    (clone / "junk").write_text("x")
    assert fetcher.fetch(url).source.commit == etl_repo.head_sha


@pytest.mark.parametrize(
    "etl_path, message",
    [
        ("git+file:///x/repo", "names no file"),
        ("git+/x/repo#a.py", "not a git\\+<scheme>"),
        ("git+file:///x/repo@#a.py", "empty ref"),
        ("git+ext::sh -c touch% /tmp/pwned#a.py", "not a git\\+<scheme>"),
        ("s3://bucket/etl.py", "unsupported ETL location"),
        ("", "etl_path is required"),
    ],
)
def test_malformed_locations(fetcher, etl_path, message):
    with pytest.raises(InvalidEtl, match=message):
        fetcher.fetch(etl_path)


def test_keyword_form_needs_repo_and_path_and_no_etl_path(fetcher, etl_repo):
    with pytest.raises(InvalidEtl, match="not both"):
        fetcher.fetch("x.py", repo=etl_repo.path.as_uri(), path="etls/features.py")
    with pytest.raises(InvalidEtl, match="required"):
        fetcher.fetch(repo=etl_repo.path.as_uri())
    with pytest.raises(InvalidEtl, match="unsupported git remote"):
        fetcher.fetch(repo="ftp://host/repo.git", path="etls/features.py")


# ---------------------------------------------------------------------- git over HTTP (loopback)


def test_git_http_remote_must_be_allowed(tmp_path, git_http):
    url = f"git+{git_http.url}@main#etls/features.py"
    with pytest.raises(InvalidEtl, match="ETL_ALLOWED_REMOTES"):
        EtlFetcher(tmp_path / "cache", timeout=10).fetch(url)
    allowed = EtlFetcher(tmp_path / "cache", allowed_remotes=[git_http.base + "/acme/"], timeout=10)
    fetched = allowed.fetch(url)
    assert_fetched(fetched, FEATURES_ETL)
    assert fetched.source.repo == git_http.url


def test_known_commit_is_served_from_the_cache_when_the_remote_is_gone(tmp_path, git_http, etl_repo):
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=[git_http.base + "/"], timeout=5)
    fetcher.fetch(f"git+{git_http.url}@main#etls/features.py")
    shutil.rmtree(git_http.bare)
    by_sha = fetcher.fetch(f"git+{git_http.url}@{etl_repo.v1_sha}#etls/features.py")
    assert_fetched(by_sha, FEATURES_ETL)
    with pytest.raises(UpstreamUnavailable) as caught:  # a branch must be asked for
        fetcher.fetch(f"git+{git_http.url}@main#etls/features.py")
    assert caught.value.status == 502
    assert caught.value.details["repo"] == git_http.url


def test_unreachable_git_remote_is_502_naming_it(tmp_path, closed_port):
    remote = f"http://127.0.0.1:{closed_port}/acme/etls.git"
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=[f"http://127.0.0.1:{closed_port}/"], timeout=5)
    with pytest.raises(UpstreamUnavailable, match=remote) as caught:
        fetcher.fetch(f"git+{remote}@main#etls/features.py")
    assert caught.value.status == 502
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_hanging_git_remote_times_out(tmp_path, silent_port):
    remote = f"http://127.0.0.1:{silent_port}/acme/etls.git"
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=[remote], timeout=1)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        fetcher.fetch(f"git+{remote}#etls/features.py")
    assert time.monotonic() - started < 15


# ---------------------------------------------------------------------- allow-list


@pytest.mark.parametrize(
    "etl_path",
    [
        "git+https://github.com/evil/etls.git@main#etls/features.py",
        "git+ssh://git@github.com/evil/etls.git#etls/features.py",
        "git+https://github.com/acme-evil/etls.git#etls/features.py",  # prefix without '/' boundary
        "git+https://github.com/acme/../evil/etls.git#etls/features.py",
        "git+https://github.com/acme/%2e%2e/evil/etls.git#etls/features.py",
        "https://example.com/etls/features.py",
        "https://github.com.evil.example/acme/features.py",
        "http://github.com/acme/features.py",  # scheme matters
    ],
)
def test_remote_not_allowed(tmp_path, etl_path):
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=["https://github.com/acme"], timeout=1)
    with pytest.raises(InvalidEtl, match="ETL_ALLOWED_REMOTES") as caught:
        fetcher.fetch(etl_path)
    assert caught.value.status == 400
    assert caught.value.details["setting"] == "ETL_ALLOWED_REMOTES"


def test_no_remote_is_allowed_by_default(fetcher):
    with pytest.raises(InvalidEtl, match="not allowed"):
        fetcher.fetch("https://github.com/acme/etls/features.py")


# ---------------------------------------------------------------------- plain HTTP


@pytest.fixture
def http_fetcher(tmp_path, http_server) -> EtlFetcher:
    return EtlFetcher(tmp_path / "cache", allowed_remotes=[http_server.base + "/"], timeout=5)


def test_http_fetch(http_fetcher, http_server):
    http_server.routes["/etls/features.py"] = (200, {"Content-Type": "text/x-python"}, FEATURES_ETL.encode())
    url = http_server.base + "/etls/features.py"
    fetched = http_fetcher.fetch(url)
    assert_fetched(fetched, FEATURES_ETL)
    assert (fetched.source.kind, fetched.source.url, fetched.source.commit) == ("http", url, None)


def test_http_credentials_are_refused_and_not_echoed(http_fetcher, http_server):
    http_server.routes["/etls/features.py"] = (200, {}, FEATURES_ETL.encode())
    url = http_server.base.replace("http://", "http://robot:s3cret@") + "/etls/features.py"
    with pytest.raises(InvalidEtl, match="user info") as caught:
        http_fetcher.fetch(url)
    assert "s3cret" not in str(caught.value.to_dict())


def test_backslash_userinfo_cannot_reach_another_host(tmp_path, http_server, evil_server):
    """Security 1: urlsplit reads the host after the last '@', requests ends it at the backslash."""
    http_server.routes["/allowed/x.py"] = (200, {}, FEATURES_ETL.encode())
    evil = evil_server.base.removeprefix("http://")
    allowed = http_server.base.removeprefix("http://")
    evil_server.routes[f"/%5C@{allowed}/allowed/x.py"] = (200, {}, b"import os  # evil\n")
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=[http_server.base + "/allowed/"], timeout=5)
    with pytest.raises(InvalidEtl, match="refused") as caught:
        fetcher.fetch(f"http://{evil}\\@{allowed}/allowed/x.py")
    assert caught.value.status == 400
    redirecting = f"http://{evil}\\@{allowed}/allowed/x.py"
    http_server.routes["/allowed/hop.py"] = (302, {"Location": redirecting}, b"")
    with pytest.raises(InvalidEtl, match="refused"):
        fetcher.fetch(http_server.base + "/allowed/hop.py")


@pytest.mark.parametrize("host", [
    "allowed.example.", "ALLOWED%2Eexample", "allowed.ex\u00e4mple", "allowed.example\t", "allowed.example\x00",
    "2130706433", "0177.0.0.1", "127.1", "0x7f.0.0.1", "[::ffff:127.0.0.1]", "-allowed.example",
    "user:pw@allowed.example", "user@allowed.example", "a@b@allowed.example", "allowed.example:080",
    "allowed.example:99999",
], ids=repr)
@pytest.mark.parametrize("form", ["http://{host}/etls/x.py", "git+https://{host}/etls.git#x.py"])
def test_ambiguous_remote_urls_are_refused(tmp_path, host, form):
    prefixes = ["http://allowed.example/", "https://allowed.example/", "http://127.0.0.1/", "https://127.0.0.1/"]
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=prefixes, timeout=1)
    with pytest.raises(InvalidEtl, match="is refused") as caught:
        fetcher.fetch(form.format(host=host))
    assert caught.value.status == 400
    assert "pw" not in str(caught.value.to_dict())


def test_ssh_remote_keeps_a_plain_user_name_but_no_password(tmp_path):
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=["ssh://git@allowed.example/acme/"], timeout=1)
    with pytest.raises(InvalidEtl, match="is refused"):
        fetcher.fetch("git+ssh://git:pw@allowed.example/acme/etls.git#x.py")
    with pytest.raises(InvalidEtl, match="not allowed"):  # checked, then compared with the allow-list
        fetcher.fetch("git+ssh://git@other.example/acme/etls.git#x.py")


def test_http_records_the_url_it_fetched(http_fetcher, http_server):
    http_server.routes["/etls/features.py"] = (200, {}, FEATURES_ETL.encode())
    http_server.routes["/etls/old.py"] = (301, {"Location": "/etls/features.py"}, b"")
    upper = http_server.base.replace("http://", "HTTP://") + "/etls/%66eatures.py#frag"
    assert http_fetcher.fetch(upper).source.url == http_server.base + "/etls/features.py"
    assert http_fetcher.fetch(http_server.base + "/etls/old.py").source.url == http_server.base + "/etls/features.py"


@pytest.mark.parametrize("status, error", [(404, InvalidEtl), (403, InvalidEtl), (503, UpstreamUnavailable)])
def test_http_error_status(http_fetcher, http_server, status, error):
    http_server.routes["/etls/features.py"] = (status, {}, b"nope")
    with pytest.raises(error, match=f"HTTP {status}") as caught:
        http_fetcher.fetch(http_server.base + "/etls/features.py")
    assert caught.value.details["status"] == status


def test_http_redirects_are_checked_against_the_allow_list(http_fetcher, http_server):
    http_server.routes["/etls/features.py"] = (200, {}, FEATURES_ETL.encode())
    http_server.routes["/old.py"] = (302, {"Location": "/etls/features.py"}, b"")
    http_server.routes["/away.py"] = (302, {"Location": "https://example.com/evil.py"}, b"")
    assert_fetched(http_fetcher.fetch(http_server.base + "/old.py"), FEATURES_ETL)
    with pytest.raises(InvalidEtl, match="ETL_ALLOWED_REMOTES"):
        http_fetcher.fetch(http_server.base + "/away.py")
    http_server.routes["/loop.py"] = (302, {"Location": "/loop.py"}, b"")
    with pytest.raises(InvalidEtl, match="redirects more than"):
        http_fetcher.fetch(http_server.base + "/loop.py")


def test_http_size_cap_and_encoding(http_fetcher, http_server):
    http_server.routes["/big.py"] = (200, {}, b"#" * (MAX_SOURCE_BYTES + 1))
    with pytest.raises(InvalidEtl, match="larger than"):
        http_fetcher.fetch(http_server.base + "/big.py")
    http_server.routes["/latin1.py"] = (200, {}, "x = 'café'\n".encode("latin-1"))
    with pytest.raises(InvalidEtl, match="not UTF-8"):
        http_fetcher.fetch(http_server.base + "/latin1.py")


def test_http_url_must_name_a_py_file(http_fetcher, http_server):
    with pytest.raises(InvalidEtl, match="does not name a .py file"):
        http_fetcher.fetch(http_server.base + "/etls/")


def test_unreachable_http_is_502(tmp_path, closed_port):
    base = f"http://127.0.0.1:{closed_port}"
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=[base + "/"], timeout=5)
    with pytest.raises(UpstreamUnavailable) as caught:
        fetcher.fetch(base + "/etls/features.py")
    assert caught.value.status == 502


def test_hanging_http_times_out(tmp_path, silent_port):
    base = f"http://127.0.0.1:{silent_port}"
    fetcher = EtlFetcher(tmp_path / "cache", allowed_remotes=[base + "/"], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        fetcher.fetch(base + "/etls/features.py")
    assert time.monotonic() - started < 10
