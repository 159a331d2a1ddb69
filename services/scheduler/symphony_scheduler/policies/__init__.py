"""Routing policies, one small class each behind :class:`Policy`, selected by name."""

from __future__ import annotations

from symphony_scheduler.policies.base import Placement, Policy, PolicyRegistry
from symphony_scheduler.policies.least_loaded import LeastLoadedPolicy
from symphony_scheduler.policies.prefix_aware import PrefixAwarePolicy
from symphony_scheduler.policies.round_robin import RoundRobinPolicy
from symphony_scheduler.policies.sticky import StickyPolicy
from symphony_scheduler.policies.symphony import CostModel, SymphonyPolicy

__all__ = [
    "CostModel",
    "LeastLoadedPolicy",
    "Placement",
    "Policy",
    "PolicyRegistry",
    "PrefixAwarePolicy",
    "RoundRobinPolicy",
    "StickyPolicy",
    "SymphonyPolicy",
    "default_registry",
]


def default_registry() -> PolicyRegistry:
    """A fresh registry holding the five built-in policies (a new one per caller: no globals)."""
    registry = PolicyRegistry()
    registry.register(RoundRobinPolicy.name, RoundRobinPolicy)
    registry.register(LeastLoadedPolicy.name, LeastLoadedPolicy)
    registry.register(StickyPolicy.name, StickyPolicy)
    registry.register(PrefixAwarePolicy.name, PrefixAwarePolicy)
    registry.register(SymphonyPolicy.name, SymphonyPolicy)
    return registry
