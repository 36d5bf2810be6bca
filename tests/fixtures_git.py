"""A local git repository of tiny ETL scripts, and a query result they work on.

``etl_repo`` is a fresh repository on branch ``main`` with tag ``v1``::

    etls/features.py    new-style BaseEtl: user_id, is_mobile, is_paid_binded
    etls/legacy.py      original-service style (etl_abc.AbstractEtl, returns self.df)
    etls/broken.py      raises ValueError on line BROKEN_LINE
    etls/bad_return.py  returns a list

``quotes_frame`` is a query result with the columns those ETLs read.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import git
import pandas as pd
import pytest

QUOTE_COLUMNS = ["user_id", "quote_type", "quote_device", "is_binded", "is_paid"]

FEATURES_ETL = textwrap.dedent('''\
    """Quote features, one small function per feature."""
    import pandas as pd

    from extraction.etl_contract import BaseEtl


    def _is_mobile(quote_device: pd.Series) -> pd.Series:
        return quote_device.isin(["ios", "android"])


    def _is_paid_binded(is_binded: pd.Series, is_paid: pd.Series) -> pd.Series:
        return is_binded.astype(bool) & is_paid.astype(bool)


    class Etl(BaseEtl):
        def transform(self, df: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({
                "user_id": df["user_id"],
                "is_mobile": _is_mobile(df["quote_device"]),
                "is_paid_binded": _is_paid_binded(df["is_binded"], df["is_paid"]),
            })
''')
FEATURES_COLUMNS = ["user_id", "is_mobile", "is_paid_binded"]

LEGACY_ETL = textwrap.dedent('''\
    from etl_abc import AbstractEtl


    class Etl(AbstractEtl):
        def extract(self):
            self.df["is_mobile"] = self.df["quote_device"].apply(lambda d: d in ("ios", "android"))
            self.df["quote_type"] = self.df["quote_type"].str.upper()
            self.df = self.df[["user_id", "quote_type", "is_mobile", "is_paid"]]
            return self.df
''')
LEGACY_COLUMNS = ["user_id", "quote_type", "is_mobile", "is_paid"]

BROKEN_ETL = textwrap.dedent('''\
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            raise ValueError("no quotes to score")
''')
BROKEN_LINE = 6

BAD_RETURN_ETL = textwrap.dedent('''\
    from extraction.etl_contract import BaseEtl


    class Etl(BaseEtl):
        def transform(self, df):
            return list(df["user_id"])
''')

ETL_FILES = {
    "etls/features.py": FEATURES_ETL,
    "etls/legacy.py": LEGACY_ETL,
    "etls/broken.py": BROKEN_ETL,
    "etls/bad_return.py": BAD_RETURN_ETL,
}


@dataclass
class EtlRepo:
    """A local git repository of ETL scripts; `v1` tags the first commit, `main` moves on."""

    path: Path
    repo: git.Repo
    v1_sha: str

    @property
    def head_sha(self) -> str:
        return self.repo.head.commit.hexsha

    def commit(self, relpath: str, text: str, message: str) -> str:
        """Write `text` to `relpath`, commit it on the current branch and return the new SHA."""
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))
        self.repo.git.add("--", relpath)
        self.repo.git.commit("--no-verify", "--quiet", "-m", message)
        return self.head_sha

    def file(self, relpath: str) -> Path:
        """The work-tree path of `relpath`."""
        return self.path / relpath

    def git_url(self, relpath: str, ref: str | None = None) -> str:
        """``git+file:///…/repo[@ref]#relpath``."""
        return f"git+{self.path.as_uri()}" + (f"@{ref}" if ref else "") + f"#{relpath}"


def make_etl_repo(path: Path, files: dict[str, str] | None = None) -> EtlRepo:
    """Create a repository at `path` holding `files` (default ETL_FILES) on `main`, tagged `v1`."""
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "ETL Tests")
        config.set_value("user", "email", "etl-tests@example.invalid")
        config.set_value("commit", "gpgsign", "false")
        config.set_value("tag", "gpgsign", "false")
    for relpath, text in (files or ETL_FILES).items():
        target = path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))
        repo.git.add("--", relpath)
    repo.git.commit("--no-verify", "--quiet", "-m", "Add ETL scripts")
    repo.git.tag("v1")
    return EtlRepo(path=path, repo=repo, v1_sha=repo.head.commit.hexsha)


@pytest.fixture
def etl_repo(tmp_path: Path):
    """A fresh local git repository of ETL scripts (see the module docstring)."""
    etl = make_etl_repo(tmp_path / "etl-repo")
    yield etl
    etl.repo.close()


@pytest.fixture
def quotes_frame() -> pd.DataFrame:
    """A small query result with the columns the fixture ETLs read."""
    return pd.DataFrame({
        "user_id": [1, 2, 3, 4],
        "quote_type": ["auto", "home", "auto", "life"],
        "quote_device": ["ios", "web", "android", "web"],
        "is_binded": [1, 0, 1, 1],
        "is_paid": [1, 0, 0, 1],
    })
