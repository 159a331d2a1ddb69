"""Fixtures of the reliability suite: the figures each fault test measures, printed at the end."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

# The fault and soak tests run the live stack for minutes: `make test-reliability` runs them (CI
# does); a bare `pytest tests/reliability` keeps the quick in-process ones (limits, fuzzing, API keys, chart).
LIVE = [
    "test_fault_node_kill.py",
    "test_fault_scheduler_restart.py",
    "test_fault_degraded_node.py",
    "test_soak.py",
    "test_tls.py",
]
collect_ignore = [] if os.environ.get("SYMPHONY_TEST_RELIABILITY") == "1" else LIVE

# The stacks are forked from this process while it has gRPC calls in flight; grpcio >= 1.80 can then
# crash the child before its exec (grpc/grpc#43055). Effective when gRPC is not yet initialised;
# `make test-reliability` sets it in the environment as well.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

FIGURES = pytest.StashKey[list[tuple[str, str]]]()

Report = Callable[[str, str], None]


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Report:
    """``figures(name, text)`` records a measured figure for the run's final summary."""
    store = request.config.stash.setdefault(FIGURES, [])

    def report(name: str, text: str) -> None:
        store.append((f"{request.node.name}: {name}", text))

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    store = config.stash.get(FIGURES, [])
    if store:
        terminalreporter.section("reliability figures")
        for name, text in store:
            terminalreporter.write_line(f"{name}: {text}")
