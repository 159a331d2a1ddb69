"""Engine backends by name. Each module exposes ``create(config) -> EngineBackend`` and is imported
only when chosen, so the ``sim`` default never needs the vLLM backend's dependencies."""

from __future__ import annotations

import importlib
from typing import cast

from symphony.errors import InvalidArgument
from symphony_nodesched.config import NodeConfig
from symphony_nodesched.engine import EngineBackend

BACKENDS = {"sim": "symphony_nodesched.backends.sim", "vllm": "symphony_nodesched.backends.vllm"}


def create_backend(config: NodeConfig) -> EngineBackend:
    module_name = BACKENDS.get(config.engine)
    if module_name is None:
        raise InvalidArgument("engine", f"unknown engine {config.engine!r}; known: {', '.join(BACKENDS)}")
    module = importlib.import_module(module_name)
    return cast(EngineBackend, module.create(config))
