"""The shipped examples stay in step: the feature repo carries copies of the walkthrough's files."""
from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("copy, original", [
    ("feature_repo/queries/quote_join.sql", "four_table_join.sql"),
    ("feature_repo/etls/quote_features.py", "etl_repo/etls/quote_features.py"),
    ("feature_repo/etls/fitted_features.py", "etl_repo/etls/fitted_features.py"),
])
def test_feature_repo_copies_equal_the_walkthrough_files(copy, original):
    assert (EXAMPLES / copy).read_text() == (EXAMPLES / original).read_text(), f"update {copy} from {original}"
