"""Symphony's shared core: the typed API (``symphony.v1``), errors, validation, clocks, metrics."""

__version__ = "0.1.0"
