"""The Dockerfiles and build helpers, checked without an engine (the builds themselves run in
`make e2e-containers`): what each image promises its operators, and what its build context needs.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("scheduler", "nodesched", "workloadgen")
PORTS = {"scheduler": "50051 8080", "nodesched": "50061 9100", "workloadgen": "50050"}


def _dockerfile(component: str) -> str:
    return (ROOT / "docker" / f"{component}.Dockerfile").read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("component", COMPONENTS)
def test_image_is_multi_stage_pinned_non_root_with_health_check(component: str) -> None:
    steps = _instructions(_dockerfile(component))
    froms = [arg for word, arg in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    assert ("ARG", "PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm") in steps
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    assert f"extra_requirements.py {component}" in runs  # only this component's extra
    assert "-c requirements/lock.txt" in runs  # pinned
    assert "pip check" in runs
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    assert ("USER", "10001:10001") in final
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    assert not any(w == "RUN" and "pip install" in a for w, a in final)  # no build tools in the runtime
    health = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(health) == 1 and "CMD" in health[0]
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source", "documentation"):
        if key == "source":
            continue  # no public repository address is assumed
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert ("EXPOSE", PORTS[component]) in final


@pytest.mark.parametrize("component", COMPONENTS)
def test_entrypoint_is_the_components_console_script(component: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    steps = _instructions(_dockerfile(component))
    entry = [a for w, a in steps if w == "ENTRYPOINT"]
    assert entry == [f'["symphony-{component}"]']
    assert f"symphony-{component}" in scripts


@pytest.mark.parametrize("component", COMPONENTS)
def test_build_context_admits_exactly_what_the_build_copies(component: str) -> None:
    ignore = (ROOT / "docker" / f"{component}.Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied: set[str] = set()
    for word, arg in _instructions(_dockerfile(component)):
        if word == "COPY" and not arg.startswith("--from"):
            copied.update(p.rstrip("/") for p in arg.split()[:-1])
    assert copied == allowed
    for path in copied:
        assert (ROOT / path).exists(), path


def _extra_requirements(extra: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "extra_requirements.py"), extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_extra_requirements_expand_self_references() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scheduler = _extra_requirements("scheduler")
    assert scheduler[: len(project["dependencies"])] == project["dependencies"]
    assert set(project["optional-dependencies"]["scheduler"]) <= set(scheduler)
    cluster = _extra_requirements("cluster")  # symphony[scheduler,nodesched,workloadgen]
    assert not any(r.startswith("symphony[") for r in cluster)
    assert set(project["optional-dependencies"]["workloadgen"]) <= set(cluster)
    assert len(cluster) == len(set(cluster))


def test_extra_requirements_rejects_unknown_extra() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "extra_requirements.py"), "gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "unknown extra 'gpu'" in proc.stderr


def test_build_script_rejects_unknown_component() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "docker" / "build.sh"), "frontend"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "CONTAINER_ENGINE": "podman"},
    )
    assert proc.returncode == 2
    assert "no docker/frontend.Dockerfile" in proc.stderr


def test_kind_values_use_the_images_the_kind_script_loads() -> None:
    values = yaml.safe_load((ROOT / "charts" / "symphony" / "ci" / "sim-values.yaml").read_text())
    script = (ROOT / "e2e" / "kind" / "run.sh").read_text()
    assert 'IMAGE_PREFIX=symphony- IMAGE_TAG="$TAG"' in script and "TAG=dev" in script
    for component in COMPONENTS:
        image = values[component]["image"]
        assert image == {"repository": f"symphony-{component}", "tag": "dev", "pullPolicy": "Never"}
    assert values["engine"] == "sim"
