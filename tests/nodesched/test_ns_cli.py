"""The ``symphony-nodesched`` process: flags, registration, clean shutdown on SIGTERM/SIGINT."""

import asyncio
import signal
import subprocess
import sys

import grpc
import pytest

from symphony.grpcutil import start_server
from symphony.v1 import nodesched_pb2, nodesched_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from symphony_nodesched.fakes import FakeScheduler

pytestmark = [pytest.mark.integration]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "symphony_nodesched", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "cpu-tiny/test"], "--node-id"),
        (["--node-id", "n", "--profile", "tpu/none"], "unknown profile 'tpu/none'"),
        (["--node-id", "n", "--listen", "nowhere"], "listen must be HOST:PORT"),
        (["--node-id", "n", "--time-scale", "-2"], "time_scale"),
        (["--node-id", "n", "--engine", "tpu"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_a_message_and_no_traceback(args: list[str], message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_registers_serves_and_shuts_down_cleanly(sig: signal.Signals) -> None:
    fake = FakeScheduler()
    name = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
    sched = await start_server(
        lambda s: scheduler_pb2_grpc.add_SchedulerServicer_to_server(fake, s), [name], "127.0.0.1:0"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "symphony_nodesched",
        "--node-id",
        "cli-node",
        "--listen",
        "127.0.0.1:0",
        "--advertise",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--scheduler",
        f"127.0.0.1:{sched.port}",
        "--profile",
        "cpu-tiny/test",
        "--time-scale",
        "10",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await fake.wait_for(lambda: bool(fake.registrations), timeout_s=60)
        reg = fake.registrations[0]
        assert reg.node_id == "cli-node" and reg.profile == "cpu-tiny/test"
        async with grpc.aio.insecure_channel(reg.address) as channel:
            stub = nodesched_pb2_grpc.NodeSchedulerStub(channel)
            status = await stub.GetStatus(nodesched_pb2.GetStatusRequest())
            assert len(status.tiers) == 3
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "Traceback" not in err and "shutting down" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sched.stop(0)
