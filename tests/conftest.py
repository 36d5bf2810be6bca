"""Shared fixtures: plugins hold the pieces each area needs."""
pytest_plugins = ["tests.fixtures_pg", "tests.fixtures_git"]
