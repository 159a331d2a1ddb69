"""Fixtures of the reliability suite: the figures each fault test measures, printed at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

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
