"""API keys on the HTTP front door: no key or a wrong key is 401 with a JSON body, probes stay
open, and the workload generator sends its key (from the environment, never written out)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from symphony.security import SecurityConfigError, load_api_keys
from symphony_scheduler.fakes import FakeNode
from symphony_scheduler.server import RunningScheduler, SchedulerConfig, start_scheduler

KEY = "test-key-0123456789abcdef"
BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


@pytest.fixture
async def sched() -> AsyncIterator[RunningScheduler]:
    # The fake node does not heartbeat: a long lease keeps it registered for the whole test.
    config = SchedulerConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", lease_s=3600, api_keys=frozenset({KEY})
    )
    running = await start_scheduler(config)
    node = await FakeNode.start("node-a", f"127.0.0.1:{running.grpc_port}")
    try:
        yield running
    finally:
        await node.stop()
        await running.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": "Basic " + KEY},
        {"x-api-key": ""},
    ],
)
async def test_requests_without_a_valid_key_get_401(sched: RunningScheduler, headers: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{sched.http_port}"
    async with aiohttp.ClientSession() as http:
        for method, path in [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("POST", "/v1/sessions/s/advice"),
        ]:
            async with http.request(method, url + path, json=BODY, headers=headers) as resp:
                assert resp.status == 401
                body = await resp.json()
                assert "API key is required" in body["error"]["message"]
                assert body["error"]["type"] == "authentication_error"
                assert KEY not in json.dumps(body)
    assert len(sched.app.core.sessions) == 0


async def test_a_valid_key_is_served_and_probes_need_none(sched: RunningScheduler) -> None:
    url = f"http://127.0.0.1:{sched.http_port}"
    async with aiohttp.ClientSession() as http:
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
            async with http.post(f"{url}/v1/chat/completions", json=BODY, headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["choices"][0]["message"]["content"]
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(url + path) as resp:
                assert resp.status == 200


async def test_the_workload_generator_sends_its_key(sched: RunningScheduler, tmp_path: Path) -> None:
    out = tmp_path / "wg"
    args = ["--target", f"openai://127.0.0.1:{sched.http_port}", "--num-clients", "2", "--max-turns", "4"]
    args += ["--time-scale", "50", "--no-plots", "--quiet", "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "symphony_workloadgen", *args,
        env={**os.environ, "SYMPHONY_API_KEY": KEY},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await proc.communicate()
    assert proc.returncode == 0, output.decode()[-2000:]
    assert json.loads((out / "summary.json").read_text())["turns"]["ok"] >= 4
    assert KEY not in output.decode()
    for f in out.iterdir():
        assert KEY not in f.read_text(errors="replace"), f"the key was written to {f.name}"


def test_keys_come_from_a_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keys"
    f.write_text("# operators\nkey-one-0123456789abcdef\n\nkey-two-0123456789abcdef  # ci\n")
    monkeypatch.setenv("SYMPHONY_API_KEYS", "key-env-0123456789abcdef")
    assert load_api_keys(f) == {
        "key-one-0123456789abcdef",
        "key-two-0123456789abcdef",
        "key-env-0123456789abcdef",
    }
    f.write_text("short\n")
    with pytest.raises(SecurityConfigError, match="at least 16 characters"):
        load_api_keys(f)
    with pytest.raises(SecurityConfigError, match=r"--api-key-file .*: cannot read"):
        load_api_keys(tmp_path / "absent")
