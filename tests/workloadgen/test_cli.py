"""The command line as users run it: a real process against a fake scheduler on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from symphony.grpcutil import ServerHandle

from .fakes import FakeScheduler, start_fake_scheduler

FAST = ["--time-scale", "200", "--quiet", "--seed", "3"]


async def cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "symphony_workloadgen", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeScheduler, ServerHandle]]:
    f = FakeScheduler()
    server = await start_fake_scheduler(f)
    yield f, server
    await server.stop(0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-clients", "0"], "--num-clients: must be > 0"),
        (["--max-tokens", "lots"], "expected 'dataset' or a number"),
        (["--advisory-miss-rate", "1.5"], "must be in [0, 1]"),
        (["--target", "ftp://x"], "openai://host:port"),
        (["--synthetic-turns", "6-2"], "need 1 <= A <= B"),
        (["--response-mode", "callback", "--target", "openai://h:1"], "needs the Symphony target"),
    ],
)
async def test_bad_flags_exit_2_without_traceback(args: list[str], message: str) -> None:
    code, _, err = await finish(await cli(*args))
    assert code == 2 and message in err and "Traceback" not in err


async def test_malformed_dataset_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"conversations": [{"value": "a"}, {"value": "b"}]}, {"id": 4}]')
    code, _, err = await finish(await cli("--dataset", str(bad)))
    assert code == 2 and "entry 1: missing 'conversations'" in err and "Traceback" not in err


async def test_a_run_writes_records_summary_and_plots(
    fake: tuple[FakeScheduler, ServerHandle], tmp_path: Path
) -> None:
    sched, server = fake
    out = tmp_path / "out"
    code, stdout, err = await finish(
        await cli(
            "--scheduler-ip", "127.0.0.1", "--scheduler-port", str(server.port), "--num-clients", "4",
            "--max-turns", "12", "--out", str(out), "--slo-ttft", "5", *FAST,
        )
    )  # fmt: skip
    assert code == 0, err
    assert "TTFT" in stdout and "12 ok, 0 failed" in stdout
    rows = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["ok"] and r["ttft"] <= r["e2e"] for r in rows)
    assert (out / "turns.csv").read_text().count("\n") == 13
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["turns"]["ok"] == 12
    assert summary["throughput"]["slo_attainment"] == 1.0
    assert summary["cache"]["cached_ratio"] == pytest.approx(0.5, abs=0.05)
    assert summary["dataset"]["source"] == "synthetic"
    for png in ("latency_cdf.png", "ttft_by_turn.png", "latency_over_time.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert len(sched.turns) == 12 and len({a.session_id for a in sched.turns}) >= 4


async def test_failed_turns_exit_1(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    sched, server = fake
    sched.fail_turns = frozenset({0})
    code, stdout, err = await finish(
        await cli("--scheduler-port", str(server.port), "--num-clients", "2", "--max-turns", "3", *FAST)
    )
    assert code == 1 and "3 turn(s) failed" in err and "INVALID_ARGUMENT x3" in stdout


async def test_callback_mode_with_the_original_flag_spelling(
    fake: tuple[FakeScheduler, ServerHandle],
) -> None:
    sched, server = fake
    code, stdout, err = await finish(
        await cli(
            "--scheduler-port", str(server.port), "--num-clients", "2", "--max-turns", "4",
            "--response-mode", "callback", "--reciever-port", "0", "--callback-host", "127.0.0.1", *FAST,
        )
    )  # fmt: skip
    assert code == 0, err
    assert "4 ok" in stdout
    submits = [a.request for a in sched.turns]
    assert len(submits) == 4


async def test_sigint_drains_and_writes_the_partial_report(
    fake: tuple[FakeScheduler, ServerHandle], tmp_path: Path
) -> None:
    sched, server = fake
    sched.hold = asyncio.Event()
    proc = await cli(
        "--scheduler-port", str(server.port), "--num-clients", "3", "--out", str(tmp_path), *FAST
    )
    await sched.started.wait()
    proc.send_signal(signal.SIGINT)
    # The generator stops sending and drains its in-flight turns: release them.
    sched.hold.set()
    code, _, err = await finish(proc)
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["interrupted"] is True
    assert summary["turns"]["ok"] == len(sched.turns) >= 1


async def test_unreachable_scheduler_is_one_clear_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await finish(await cli("--scheduler-port", str(port), "--connect-timeout", "0.5", *FAST))
    assert code == 1 and f"no scheduler reachable at localhost:{port}" in err and "Traceback" not in err


async def test_receiver_port_in_use_is_one_clear_error(fake: tuple[FakeScheduler, ServerHandle]) -> None:
    _, server = fake
    code, _, err = await finish(
        await cli(
            "--scheduler-port", str(server.port), "--response-mode", "callback",
            "--receiver-port", str(server.port), *FAST,
        )
    )  # fmt: skip
    assert code == 1 and "the receiver cannot listen" in err and "Traceback" not in err
