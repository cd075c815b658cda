"""Root test configuration: the real-server fixtures from `tests/infra`."""

pytest_plugins = ["tests.infra.conftest_plugin"]
