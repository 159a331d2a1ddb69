"""Malformed settings, datasets and key files end a command with one line naming the problem and
exit code 2 (usage) or 1: never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("symphony_scheduler", ["--tls-ca", "{tmp}/absent.pem"], "--tls-ca {tmp}/absent.pem: cannot read"),
        ("symphony_scheduler", ["--tls-cert", "{tmp}/junk.pem"], "--tls-cert and --tls-key go together"),
        ("symphony_scheduler", ["--tls-cert", "{tmp}/junk.pem", "--tls-key", "{tmp}/junk.pem"], "not a PEM"),
        ("symphony_scheduler", ["--api-key-file", "{tmp}/short.txt"], "at least 16 characters"),
        ("symphony_scheduler", ["--max-advisories-per-s", "-1"], "--max-advisories-per-s"),
        ("symphony_scheduler", ["--max-sessions-per-client", "-3"], "--max-sessions-per-client"),
        ("symphony_nodesched", ["--node-id", "n", "--tls-ca", "{tmp}/absent.pem"], "--tls-ca"),
        ("symphony_workloadgen", ["--tls-key", "{tmp}/junk.pem"], "--tls-cert and --tls-key go together"),
        ("symphony_workloadgen", ["--dataset", "{tmp}/junk.pem"], "junk.pem"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path: Path, module: str, args: list[str], message: str) -> None:
    (tmp_path / "junk.pem").write_text("this is not a certificate\n")
    (tmp_path / "short.txt").write_text("short\n")
    result = _run(module, *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode in (1, 2), result
    assert "Traceback" not in result.stderr, result.stderr
    assert message.format(tmp=tmp_path) in result.stderr, result.stderr
