"""Probes the container stack from inside its network (stdlib only: runs in any project image).

  probe.py ready URL [--timeout S]                       wait until URL answers 200
  probe.py metric URL NAME [--min X] [--timeout S]       wait until the sum of NAME's samples >= X
  probe.py metrics URL NAME...                           /metrics answers and exposes every NAME
  probe.py grpc-health HOST:PORT                         grpc.health.v1 says SERVING (as the
                                                         chart's gRPC readiness probe asks)

Waiting is polling with a deadline: the stack's own health endpoints are the synchronisation.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def samples(text: str, name: str) -> list[float]:
    """Values of the samples of metric NAME (any labels) in Prometheus text format."""
    out = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            out.append(float(line.rsplit(" ", 1)[1]))
    return out


def wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            print(f"ok: {what}: {last}")
            return
        time.sleep(0.5)
    sys.exit(f"FAILED: {what} within {timeout:.0f} s (last: {last[:300]})")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ready")
    r.add_argument("url")
    r.add_argument("--timeout", type=float, default=120)
    m = sub.add_parser("metric")
    m.add_argument("url")
    m.add_argument("name")
    m.add_argument("--min", type=float, default=1)
    m.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("metrics")
    s.add_argument("url")
    s.add_argument("names", nargs="+")
    g = sub.add_parser("grpc-health")
    g.add_argument("address")
    a = p.parse_args()

    if a.cmd == "grpc-health":
        import grpc  # the project images carry grpcio and grpcio-health-checking
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(a.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            sys.exit(f"FAILED: {a.address} health is {reply.status}")
        print(f"ok: {a.address} gRPC health SERVING")
        return

    if a.cmd == "ready":

        def ready() -> tuple[bool, str]:
            code, body = fetch(a.url)
            return code == 200, f"HTTP {code} {body.strip()[:120]}"

        wait(ready, a.timeout, f"{a.url} ready")
    elif a.cmd == "metric":

        def at_least() -> tuple[bool, str]:
            code, body = fetch(a.url)
            total = sum(samples(body, a.name)) if code == 200 else float("nan")
            return total >= a.min, f"{a.name} = {total}"

        wait(at_least, a.timeout, f"{a.name} >= {a.min} at {a.url}")
    else:
        code, body = fetch(a.url)
        if code != 200:
            sys.exit(f"FAILED: {a.url} answered HTTP {code}: {body[:200]}")
        missing = [n for n in a.names if f"# TYPE {n} " not in body]
        if missing:
            sys.exit(f"FAILED: {a.url} lacks {missing}")
        print(f"ok: {a.url} exposes {', '.join(a.names)}")


if __name__ == "__main__":
    main()
