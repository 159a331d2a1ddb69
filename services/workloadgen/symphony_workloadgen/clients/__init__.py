"""Targets the generator can drive, all behind the one :class:`~.base.Target` protocol."""

from symphony_workloadgen.clients.base import Delta, Done, Target, TargetError, TurnCall, TurnEvent

__all__ = ["Delta", "Done", "Target", "TargetError", "TurnCall", "TurnEvent"]
