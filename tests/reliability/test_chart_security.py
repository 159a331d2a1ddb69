"""The chart's security settings, rendered by Helm's own engine: TLS and API keys come from
Secrets (never from values), every Symphony process gets the same TLS flags (checked with the
services' own parsers), containers are locked down, and the optional NetworkPolicies allow only
the design's paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from symphony_nodesched.__main__ import build_parser as node_parser
from symphony_scheduler.__main__ import parser as scheduler_parser
from symphony_workloadgen.__main__ import build_parser as workload_parser

CHART = Path(__file__).resolve().parents[2] / "charts" / "symphony"

try:
    import helm_python
    import kubernetes_validate  # type: ignore[import-untyped]
except (ImportError, OSError) as exc:
    if os.environ.get("CI"):
        raise
    pytest.skip(f"helm-python-sdk cannot load here: {exc}", allow_module_level=True)

Manifest = dict[str, Any]
SECURE = {
    "engine": "sim",
    "tls": {"enabled": True, "secretName": "symphony-tls", "serverName": "symphony.internal"},
    "scheduler": {"apiKeys": {"secretName": "symphony-api-keys"}, "maxSessionsPerClient": 64},
    "workloadgen": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "frontDoorFrom": [{"namespaceSelector": {"matchLabels": {"team": "llm"}}}],
    },
}


def render(values: dict[str, Any]) -> list[Manifest]:
    files = helm_python.Chart.load(CHART).render(values, name="sym", namespace="llm")
    return [
        d
        for path, text in sorted(files.items())
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]


def container(docs: list[Manifest], kind: str, name: str) -> tuple[Manifest, Manifest]:
    for d in docs:
        if d["kind"] == kind:
            spec = d["spec"]["template"]["spec"]
            for c in spec["containers"]:
                if c["name"] == name:
                    return spec, c
    raise AssertionError(f"no {kind} container {name}")


@pytest.mark.parametrize(
    ("kind", "name", "parse"),
    [
        ("Deployment", "scheduler", scheduler_parser().parse_args),
        ("DaemonSet", "nodesched", node_parser().parse_args),
        ("Job", "workloadgen", workload_parser().parse_args),
    ],
)
def test_tls_flags_and_secret_mounts(kind: str, name: str, parse: Any) -> None:
    docs = render(SECURE)
    spec, c = container(docs, kind, name)
    args = parse([str(a) for a in c["args"]])
    assert (args.tls_cert, args.tls_key, args.tls_ca) == (
        "/etc/symphony/tls/tls.crt",
        "/etc/symphony/tls/tls.key",
        "/etc/symphony/tls/ca.crt",
    )
    assert args.tls_server_name == "symphony.internal"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["tls"]["readOnly"] and mounts["tls"]["mountPath"] == "/etc/symphony/tls"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "symphony-tls"


def test_api_keys_come_from_a_secret_file_and_probes_survive_tls() -> None:
    docs = render(SECURE)
    spec, c = container(docs, "Deployment", "scheduler")
    args = scheduler_parser().parse_args([str(a) for a in c["args"]])
    assert args.api_key_file == "/etc/symphony/api-keys/api-keys"
    assert args.max_sessions_per_client == 64
    assert {v["name"]: v for v in spec["volumes"]}["api-keys"]["secret"]["secretName"] == "symphony-api-keys"
    _, node = container(docs, "DaemonSet", "nodesched")
    assert "grpc" not in node["readinessProbe"], "the kubelet's gRPC probe cannot speak TLS"
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    env = {e["name"]: e for e in test_pod["spec"]["containers"][0]["env"]}
    assert env["SYMPHONY_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "symphony-api-keys"


def test_tls_without_a_secret_is_refused_with_the_value_named() -> None:
    with pytest.raises(Exception, match=r"tls.secretName is required"):
        render({"engine": "sim", "tls": {"enabled": True}})


def test_no_secret_material_in_values_defaults() -> None:
    values = (CHART / "values.yaml").read_text()
    assert "BEGIN" not in values and "PRIVATE KEY" not in values
    defaults = yaml.safe_load(values)
    assert defaults["tls"]["secretName"] == "" and defaults["scheduler"]["apiKeys"]["secretName"] == ""
    docs = render({"engine": "sim"})
    assert not [d for d in docs if d["kind"] in ("Secret", "NetworkPolicy")]


def test_every_container_is_locked_down() -> None:
    for d in render(SECURE):
        if d["kind"] not in ("Deployment", "DaemonSet", "Job", "Pod"):
            continue
        spec = d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_network_policies_allow_only_the_designs_paths() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in render(SECURE) if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"sym-symphony-scheduler", "sym-symphony-nodesched", "sym-symphony-workloadgen"}

    def components(rule: Manifest) -> set[str]:
        return {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in rule.get("from", [])
            if "podSelector" in p
        }

    node_grpc = policies["sym-symphony-nodesched"]["ingress"][0]
    assert node_grpc["ports"] == [{"port": 50061, "protocol": "TCP"}]
    assert components(node_grpc) == {"scheduler", "nodesched"}
    front = policies["sym-symphony-scheduler"]["ingress"][0]
    assert components(front) == {"nodesched", "workloadgen"}
    assert {"namespaceSelector": {"matchLabels": {"team": "llm"}}} in front["from"]
    receiver = policies["sym-symphony-workloadgen"]["ingress"][0]
    assert components(receiver) == {"scheduler"}
    open_front = render({**SECURE, "networkPolicy": {"enabled": True}})
    spec = next(d["spec"] for d in open_front if d["metadata"]["name"] == "sym-symphony-scheduler")
    assert "from" not in spec["ingress"][0], "without frontDoorFrom the front door is open to any client"


def test_the_secure_rendering_is_valid_kubernetes_and_lints_clean() -> None:
    result = helm_python.lint(str(CHART), SECURE, strict=True)
    assert not result["errors"], result
    for doc in render(SECURE):
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
