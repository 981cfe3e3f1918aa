"""The Dagster wiring tests' fixtures (the tiny demo world's server, registered for the
demo-mode resources) for the crawl plan tests."""

from tests.pipeline.conftest import covered_cells, demo_server, tiny_world  # noqa: F401
