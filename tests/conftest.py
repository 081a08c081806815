"""Test-wide configuration: fixtures live in modules by concern under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.broker",
    "tests.fixtures.production_broker",
    "tests.fixtures.ingest",
    "tests.fixtures.simulator",
    "tests.fixtures.api",
    "tests.fixtures.alertmanager",
    "tests.fixtures.alerts",
    "tests.fixtures.operators",
    "tests.fixtures.flood",
    "tests.fixtures.browser",
    "tests.fixtures.netproxy",
    "tests.fixtures.logs",
]
