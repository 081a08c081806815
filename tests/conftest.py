"""Test-wide configuration: fixtures live in modules by concern under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.broker",
    "tests.fixtures.ingest",
    "tests.fixtures.simulator",
    "tests.fixtures.api",
]
