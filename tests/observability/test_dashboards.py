"""The shipped dashboards: generated, filtered by namespace (and node), shipped by the chart."""

from __future__ import annotations

import json
import subprocess
import sys

import helm_python
import pytest
import yaml

from .promql import ROOT, design_metric_names, load_dashboards, queries, substitute, variable_values

GENERATOR = ROOT / "e2e" / "observability" / "dashboards.py"


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    done = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_three_dashboards_have_the_namespace_and_node_variables() -> None:
    dashboards = load_dashboards()
    assert set(dashboards) == {"overview.json", "kv-cache.json", "nodes.json"}
    for name, dash in dashboards.items():
        names = {v["name"] for v in dash["templating"]["list"]}
        assert {"namespace", "node"} <= names, name
        assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"]), f"{name}: duplicate panel ids"


def test_every_query_filters_on_namespace_and_leaves_no_variable_unsubstituted() -> None:
    qs = queries()
    assert len(qs) > 40
    for q in qs:
        assert "$" not in q.promql, q
        if not q.where.startswith("variable namespace"):
            assert "$namespace" in q.expr, f"{q.dashboard} / {q.where} ignores the namespace variable"


def test_every_design_metric_is_on_some_dashboard() -> None:
    text = " ".join(q.promql for q in queries())
    for metric in design_metric_names():
        assert metric in text, f"{metric} (DESIGN.md) is on no dashboard"


def test_substitution_rejects_an_unknown_variable() -> None:
    dash = load_dashboards()["overview.json"]
    with pytest.raises(KeyError, match="nodez"):
        substitute('x{node=~"$nodez"}', variable_values(dash))


def test_the_chart_ships_each_dashboard_as_a_configmap() -> None:
    chart = helm_python.Chart.load(str(ROOT / "charts" / "symphony"))
    rendered: dict[str, str] = chart.render({"dashboards": {"enabled": True}}, name="sym", namespace="obs")
    text = rendered["symphony/templates/dashboards.yaml"]
    maps = [
        d
        for d in yaml.safe_load_all(text)
        if d and d.get("kind") == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    shipped = {key: json.loads(value) for m in maps for key, value in m["data"].items()}
    assert shipped == load_dashboards()
