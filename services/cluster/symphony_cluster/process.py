"""Child processes of a local stack: started in their own session, logged to files, never orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the launcher dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    log_path: Path | None  # None: inherit the terminal
    proc: asyncio.subprocess.Process | None = None
    expected_exit: bool = False
    _log_file: object = field(default=None, repr=False)

    async def start(self, env: dict[str, str] | None = None) -> None:
        stdout: int | object
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
            stdout = self._log_file
        else:
            stdout = None
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=asyncio.subprocess.STDOUT if self.log_path is not None else None,
            start_new_session=True,  # Ctrl+C reaches the launcher only; it stops children in order
            preexec_fn=_die_with_parent,
            env={**os.environ, **(env or {})},
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def send_signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Asks the child to stop, then kills it if it has not within ``timeout_s``."""
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.running:
            self.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.send_signal(signal.SIGKILL)
                await self.proc.wait()
        self.close_log()
        return self.proc.returncode

    def close_log(self) -> None:
        f = self._log_file
        if f is not None:
            f.close()  # type: ignore[attr-defined]
            self._log_file = None

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-16384:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
