"""The chart against the services it deploys: every command line the chart renders is accepted by
the component's own argument parser, and the chart's lists of policies and profiles are the ones
the code knows. A renamed flag or a new profile fails here, not in a cluster.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from symphony_nodesched.__main__ import parse_config
from symphony_nodesched.profile import profile_names
from symphony_scheduler.__main__ import parser as scheduler_parser
from symphony_scheduler.policies import default_registry
from symphony_workloadgen.__main__ import build_parser as workloadgen_parser

CHART = Path(__file__).resolve().parents[2] / "charts" / "symphony"

try:
    import helm_python
except (ImportError, OSError) as exc:
    if os.environ.get("CI"):
        raise
    pytest.skip(f"helm-python-sdk cannot load here: {exc}", allow_module_level=True)

# What the kubelet substitutes for $(VAR) in args (downward API, secrets).
ENV = {"NODE_NAME": "gpu-node-1", "POD_IP": "10.0.0.7", "OPENAI_API_KEY": "sk-test"}

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {"workloadgen": {"enabled": True}},
    "sim": yaml.safe_load((CHART / "ci" / "sim-values.yaml").read_text()),
    "gpu": yaml.safe_load((CHART / "ci" / "gpu-values.yaml").read_text())
    | {
        "workloadgen": {
            "enabled": True,
            "responseMode": "callback",
            "maxTokens": 128,
            "ignoreEos": True,
            "plots": False,
            "sloTtft": 0.5,
            "dataset": {"source": "pvc", "pvc": {"claimName": "data"}},
        }
    },
    "openai-target": {
        "engine": "sim",
        "workloadgen": {
            "enabled": True,
            "target": "openai://vllm.llm:8000",
            "apiKeySecret": {"name": "key"},
            "advisories": False,
            "maxSessions": 10,
            "dataset": {"source": "synthetic", "synthetic": {"turns": "normal:5:2", "promptChars": "200"}},
        },
    },
}


def _containers(values: dict[str, Any]) -> dict[str, list[str]]:
    """Args of the Symphony containers of one rendering, with $(VAR) substituted."""
    files = helm_python.Chart.load(CHART).render(values, name="sym", namespace="llm")
    out: dict[str, list[str]] = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc or doc["kind"] not in {"Deployment", "DaemonSet", "Job"}:
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                args = [re.sub(r"\$\((\w+)\)", lambda m: ENV[m.group(1)], str(a)) for a in c.get("args", [])]
                out[c["name"]] = args
    return out


def _accepts(parse: Any, args: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    try:
        return parse(args)
    except SystemExit:
        pytest.fail(f"the component refuses the chart's command line {args}: {capsys.readouterr().err}")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_services_accept_the_rendered_command_lines(
    scenario: str, capsys: pytest.CaptureFixture[str]
) -> None:
    containers = _containers(SCENARIOS[scenario])
    sched = _accepts(scheduler_parser().parse_args, containers["scheduler"], capsys)
    assert sched.listen == "0.0.0.0:50051" and sched.http_listen == "0.0.0.0:8080"
    node = _accepts(parse_config, containers["nodesched"], capsys)
    assert node.node_id == "gpu-node-1" and node.advertise == "10.0.0.7:50061"
    assert node.scheduler == "sym-symphony-scheduler-nodes:50051"
    gen = _accepts(workloadgen_parser().parse_args, containers["workloadgen"], capsys)
    if scenario == "gpu":
        assert node.engine == "vllm" and node.vllm_url == "http://127.0.0.1:8000"
        assert gen.response_mode == "callback" and gen.callback_host == "10.0.0.7"
        assert gen.ignore_eos and gen.no_plots and gen.dataset == "/data/sharegpt.json"
    if scenario == "sim":
        assert node.engine == "sim" and node.profile == "cpu-tiny/test"
        assert gen.dataset == "synthetic" and gen.scheduler_ip == "sym-symphony-scheduler"
    if scenario == "openai-target":
        assert gen.target == "openai://vllm.llm:8000" and gen.api_key == "sk-test"
        assert gen.no_advisories and gen.max_sessions == 10


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_chart_policies_are_the_schedulers() -> None:
    enum = _schema()["properties"]["scheduler"]["properties"]["policy"]["enum"]
    assert sorted(enum) == sorted(default_registry().names())


def test_chart_profiles_are_the_node_schedulers() -> None:
    enum = _schema()["properties"]["nodesched"]["properties"]["profile"]["enum"]
    assert sorted(enum) == sorted(profile_names())
