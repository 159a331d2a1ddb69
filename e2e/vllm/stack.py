"""The Symphony stack on real vLLM engines: scheduler + one `--engine vllm` node scheduler per
engine + the workload generator, as separate processes on loopback (the same command lines the
chart uses). Passes when the workload generator reports no failed turn and later turns of sessions found their
earlier turns' K,V (cached prompt tokens) through the stack.
Usage: stack.py --bin VENV_BIN --run-dir DIR --engine NAME=OPENAI_URL,CONTROL_URL [--engine ...]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Polls a health endpoint of a process this script started; fails fast if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: {log.stem} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    sys.exit(f"error: {url} not ready after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True, type=Path, help="bin directory of the dev venv")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--engine", action="append", required=True, help="NAME=OPENAI_URL,CONTROL_URL")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--policy", default="symphony")
    args = p.parse_args(argv)

    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, cmd: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = args.run_dir / f"{name}.log"
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        procs[name] = proc
        return proc, log

    try:
        grpc_port, http_port = free_port(), free_port()
        sched, sched_log = spawn(
            "scheduler",
            [
                str(args.bin / "symphony-scheduler"),
                "--listen",
                f"127.0.0.1:{grpc_port}",
                "--http-listen",
                f"127.0.0.1:{http_port}",
                "--policy",
                args.policy,
                "--heartbeat-interval",
                "1.0",
            ],
        )
        wait_http(f"http://127.0.0.1:{http_port}/healthz", sched, 60, sched_log)
        controls: dict[str, str] = {}
        node_addrs: dict[str, str] = {}
        for spec in args.engine:
            name, _, urls = spec.partition("=")
            url, _, control = urls.partition(",")
            controls[name] = control
            port, mport = free_port(), free_port()
            node, node_log = spawn(
                f"nodesched-{name}",
                [
                    str(args.bin / "symphony-nodesched"),
                    "--node-id",
                    f"node-{name}",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--advertise",
                    f"127.0.0.1:{port}",
                    "--scheduler",
                    f"127.0.0.1:{grpc_port}",
                    "--engine",
                    "vllm",
                    "--profile",
                    "cpu-tiny/test",
                    "--vllm-url",
                    url,
                    "--vllm-control-url",
                    control,
                    "--metrics-listen",
                    f"127.0.0.1:{mport}",
                ],
            )
            wait_http(f"http://127.0.0.1:{mport}/healthz", node, 120, node_log)
            node_addrs[name] = f"127.0.0.1:{port}"
        wait_http(f"http://127.0.0.1:{http_port}/readyz", sched, 60, sched_log)
        before = {n: len(sessions(c)) for n, c in controls.items()}
        out = args.run_dir / "workload"
        wl = subprocess.run(
            [
                str(args.bin / "symphony-workloadgen"),
                "--scheduler-ip",
                "127.0.0.1",
                "--scheduler-port",
                str(grpc_port),
                "--num-clients",
                str(args.clients),
                "--duration",
                str(args.duration),
                "--synthetic-turns",
                "2-4",
                "--synthetic-prompt-chars",
                "400-1200",
                "--synthetic-answer-chars",
                "100-300",
                "--max-tokens",
                "16",
                "--ignore-eos",
                "--time-scale",
                "30",
                "--seed",
                "1",
                "--out",
                str(out),
                "--no-plots",
                "--progress-interval",
                "5",
            ],
            check=False,
        )
        held = {n: len(sessions(c)) - before[n] for n, c in controls.items()}
        # Informational: sessions that ended were released (deleted) by the node schedulers.
        print(f"sessions held in each engine's connector store at the end: {held}")
        problems = []
        later = reuse_report(out / "turns.jsonl")
        if not later:
            problems.append("no session reached a second turn")
        elif not any(t["cached_tokens"] for t in later):
            problems.append("no later turn reused K,V through the stack")
        problems += migrate_over_grpc(node_addrs, controls)
        if wl.returncode != 0:
            problems.append(f"the workload generator exited with {wl.returncode}")
        for name, proc in procs.items():
            if proc.poll() is not None:
                problems.append(f"{name} died with {proc.returncode}")
        for msg in problems:
            print(f"FAIL: {msg}")
        return 1 if problems else 0
    finally:
        for proc in reversed(procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def migrate_over_grpc(nodes: dict[str, str], controls: dict[str, str]) -> list[str]:
    """The node service's own migration path with real K,V: node A warms a session up (its
    connector stores it), node B is told to Prepare it from peer A, which streams it over FetchKv."""
    if len(nodes) < 2:
        return []
    import grpc

    from symphony.v1 import common_pb2, nodesched_pb2, nodesched_pb2_grpc

    a, b = list(nodes)[:2]
    sid = "e2e-migration"
    text = "The quick brown fox jumps over the lazy dog while a session moves between nodes. " * 100
    msgs = [common_pb2.ChatMessage(role="user", content=text)]
    with grpc.insecure_channel(nodes[a]) as ch:
        warm = nodesched_pb2_grpc.NodeSchedulerStub(ch).Prepare(
            nodesched_pb2.PrepareRequest(
                session_id=sid, source=nodesched_pb2.KV_SOURCE_RECOMPUTE, messages=msgs, eta_s=5.0
            ),
            timeout=300,
        )
    held = {s["session_id"]: s for s in sessions(controls[a])}.get(sid)
    if not warm.accepted or held is None:
        return [f"node {a} did not store the warmed-up session ({warm})"]
    with grpc.insecure_channel(nodes[b]) as ch:
        moved = nodesched_pb2_grpc.NodeSchedulerStub(ch).Prepare(
            nodesched_pb2.PrepareRequest(
                session_id=sid,
                source=nodesched_pb2.KV_SOURCE_PEER,
                peer_node_id=f"node-{a}",
                peer_address=nodes[a],
                eta_s=5.0,
            ),
            timeout=300,
        )
    got = {s["session_id"]: s for s in sessions(controls[b])}.get(sid)
    print(
        f"migration over FetchKv: node {a} held {held['tokens']} tokens; node {b} Prepare(peer) -> "
        f"source {nodesched_pb2.KvSource.Name(moved.source)}, {moved.tokens} tokens, "
        f"{moved.expected_ready_s * 1000:.0f} ms; node {b}'s store now holds {got['tokens'] if got else 0}"
    )
    if moved.source != nodesched_pb2.KV_SOURCE_PEER or not got or got["tokens"] != held["tokens"]:
        return ["Prepare(peer) over the node service did not migrate the session's K,V"]
    return []


def reuse_report(turns_file: Path) -> list[dict[str, Any]]:
    """Prints how later turns found their K,V; returns those turns."""
    if not turns_file.exists():
        return []
    turns = [json.loads(line) for line in turns_file.read_text().splitlines() if line.strip()]
    last_node: dict[str, str] = {}
    later = []
    for t in sorted(turns, key=lambda t: (t["session_id"], t["turn_index"])):
        if not t.get("ok"):
            continue
        prev = last_node.get(t["session_id"])
        last_node[t["session_id"]] = t["node_id"]
        if t["turn_index"] > 0:
            later.append(t)
            moved = f" (moved from {prev})" if prev and prev != t["node_id"] else ""
            print(
                f"  {t['session_id']} turn {t['turn_index']}: {t['node_id']}{moved}, "
                f"{t['cached_tokens']}/{t['prompt_tokens']} prompt tokens cached, TTFT {t['ttft'] * 1000:.0f} ms"
            )
    return later


def sessions(control: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{control}/v1/sessions", timeout=10) as r:
        return list(json.loads(r.read())["sessions"])


if __name__ == "__main__":
    sys.exit(main())
