"""Print the requirements of the project's core plus one extra, one per line.

The image builds install these (pinned by requirements/lock.txt) before copying the sources, so
the dependency layer stays cached while the code changes. Self-references such as
``symphony[scheduler,nodesched]`` are expanded. Usage: python3 extra_requirements.py EXTRA
"""

import re
import sys
import tomllib


def requirements(project: dict, extra: str, seen: set[str]) -> list[str]:
    if extra in seen:
        return []
    seen.add(extra)
    name = project["name"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        sys.exit(f"unknown extra {extra!r}; known: {', '.join(sorted(extras))}")
    out = []
    for req in extras[extra]:
        own = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.replace(" ", ""))
        if own:
            for sub in own.group(1).split(","):
                out += requirements(project, sub, seen)
        else:
            out.append(req)
    return out


def main() -> None:
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project.get("dependencies", []))
    if len(sys.argv) > 1 and sys.argv[1]:
        reqs += requirements(project, sys.argv[1], set())
    print("\n".join(dict.fromkeys(reqs)))


if __name__ == "__main__":
    main()
