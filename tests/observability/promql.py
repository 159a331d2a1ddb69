"""What the Prometheus test evaluates: every PromQL expression of every shipped dashboard (panel
targets and variable queries), with Grafana's variables substituted, and the metric names that
DESIGN.md promises.

Substitution (Grafana fills these in at query time; the test must pick values itself):
``$namespace`` and ``$node`` (multi-value, "All" = ``.*``) become ``.*``; ``$__rate_interval``
becomes a fixed window (``RATE_WINDOW``); a custom variable (``$slo_ttft``) becomes its default.
A variable query ``label_values(SELECTOR, LABEL)`` becomes ``count by (LABEL) (SELECTOR)``, which
returns one series per value Grafana would offer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "charts" / "symphony" / "dashboards"
DESIGN = ROOT / "docs" / "DESIGN.md"
RATE_WINDOW = "30s"
ALL = ".*"

_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")
_VAR = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?")


@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str  # panel title or "variable NAME"
    expr: str  # as written in the dashboard
    promql: str  # with the variables substituted

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.where}: {self.promql}"


def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """The value the test gives each variable: ``.*`` for query variables, the default otherwise."""
    values = {"__rate_interval": RATE_WINDOW, "__interval": RATE_WINDOW}
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query":
            values[var["name"]] = ALL
        elif var["type"] == "custom":
            values[var["name"]] = str(var["current"]["value"])
        elif var["type"] == "datasource":
            values[var["name"]] = "prometheus"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


def queries(dashboards: dict[str, dict[str, Any]] | None = None) -> list[Query]:
    out: list[Query] = []
    for name, dash in (dashboards or load_dashboards()).items():
        values = variable_values(dash)
        for var in dash.get("templating", {}).get("list", []):
            if var["type"] != "query":
                continue
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = _LABEL_VALUES.match(q.strip())
            if m is None:
                raise ValueError(f"{name}: variable {var['name']}: only label_values(...) is supported: {q}")
            promql = f"count by ({m['label']}) ({m['selector']})"
            out.append(Query(name, f"variable {var['name']}", q, substitute(promql, values)))
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append(Query(name, panel["title"], target["expr"], substitute(target["expr"], values)))
    return out


def design_metric_names(design: Path = DESIGN) -> list[str]:
    """Every ``symphony_*`` name in DESIGN.md's metrics section, as exposed to Prometheus."""
    text = design.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"\bsymphony_[a-z0-9_]*[a-z0-9]", section)))


def presence_query(metric: str) -> str:
    """A histogram is named without a suffix in DESIGN.md; its ``_count`` series is what exists."""
    return f'count({{__name__=~"{metric}|{metric}_count"}})'
