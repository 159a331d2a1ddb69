"""The connector package lives in vllm/ (its own distribution, installed into vLLM's image); the
tests import its pure-Python modules straight from the checkout."""

import sys
from pathlib import Path

_PKG = str(Path(__file__).resolve().parents[2] / "vllm")
if _PKG not in sys.path:
    sys.path.insert(0, _PKG)
