"""The dashboards against a real Prometheus (``make test-observability``; not in the default run).

A local stack (scheduler + two node schedulers, sim engine) runs a short workload while Debian's
Prometheus scrapes it every second. Once every target has been scraped at least twice after the
run, EVERY PromQL expression of every shipped dashboard is evaluated through Prometheus' HTTP API
(variables substituted as promql.py documents); an expression that Prometheus rejects or that
returns no series fails the test, as does a ``symphony_*`` metric of DESIGN.md that is absent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from symphony_cluster.local import LocalStack, StackConfig
from symphony_cluster.ports import free_ports
from symphony_cluster.process import Child

from .promql import design_metric_names, presence_query, queries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NAMESPACE = "symphony-local"  # what Kubernetes service discovery would attach


def _api(port: int, path: str, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as err:  # 400: the expression is invalid; the body says why
        doc = json.load(err)
    return doc


async def _query(port: int, promql: str) -> dict[str, Any]:
    return await asyncio.to_thread(_api, port, "query", query=promql)


def _scrape_config(stack: LocalStack) -> dict[str, Any]:
    host = stack.config.host
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "symphony-scheduler",
                "static_configs": [
                    {
                        "targets": [f"{host}:{stack.endpoints.scheduler_http}"],
                        "labels": {"namespace": NAMESPACE},
                    }
                ],
            },
            {
                "job_name": "symphony-nodesched",
                "static_configs": [
                    {
                        "targets": [f"{host}:{p}" for p in stack.endpoints.node_metrics],
                        "labels": {"namespace": NAMESPACE},
                    }
                ],
            },
        ],
    }


async def _wait_scrapes(port: int, targets: int, since: float, deadline: float) -> None:
    """Until every target has at least two successful scrapes that started after ``since``."""
    window = max(2, int(time.time() - since))
    promql = f"count(count_over_time(up[{window}s]) >= 2 and up == 1)"
    while time.monotonic() < deadline:
        doc = await _query(port, promql)
        result = doc.get("data", {}).get("result", [])
        if result and int(float(result[0]["value"][1])) >= targets:
            return
        await asyncio.sleep(0.5)  # polling an external process, not a test synchronisation
    raise AssertionError(f"Prometheus did not scrape all {targets} targets twice in time")


async def test_every_dashboard_expression_returns_series(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary is not None, (
        "the prometheus binary is missing: run `make test-observability`, which installs Debian's "
        "prometheus package (apt-get install -y --no-install-recommends prometheus)"
    )
    stack = LocalStack(
        StackConfig(
            nodes=2,
            clients=6,
            duration_s=60,
            profile="cpu-tiny/test",
            out_dir=tmp_path / "run",
            quiet=True,
            workload_args=["--time-scale", "20", "--max-turns", "30", "--no-plots"],
        )
    )
    (port,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(_scrape_config(stack)))
    prometheus = Child(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "prometheus.log",
    )
    # Prometheus is started first: no child is forked after this process opened gRPC channels.
    await prometheus.start()
    try:
        await stack.start()
        assert await stack.run_workload() == 0, (tmp_path / "run" / "logs" / "workloadgen.log").read_text()[
            -2000:
        ]
        ended = time.time()
        await _wait_scrapes(port, 1 + len(stack.endpoints.node_metrics), ended, time.monotonic() + 60)

        failures: list[str] = []
        checked = 0
        for q in queries():
            doc = await _query(port, q.promql)
            checked += 1
            if doc.get("status") != "success":
                failures.append(f"INVALID {q}\n    {doc.get('errorType')}: {doc.get('error')}")
            elif not doc["data"]["result"]:
                failures.append(f"NO SERIES {q}")
        missing = []
        for metric in design_metric_names():
            doc = await _query(port, presence_query(metric))
            if doc.get("status") != "success" or not doc["data"]["result"]:
                missing.append(metric)
    finally:
        await stack.stop()
        await prometheus.stop()
    print(f"evaluated {checked} dashboard expressions against Prometheus")
    assert not failures, f"{len(failures)} of {checked} dashboard expressions fail:\n" + "\n".join(failures)
    assert not missing, f"DESIGN.md metrics absent from the scrapes: {', '.join(missing)}"
