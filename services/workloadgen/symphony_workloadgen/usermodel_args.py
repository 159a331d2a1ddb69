"""The user-model flags, shared by the workload generator and ``symphony simulate`` so that a
simulated user reads, types and advises exactly as a generated one does."""

from __future__ import annotations

import argparse
from typing import Any

from symphony.cliargs import non_negative, positive, rate
from symphony_workloadgen.session import UserModel


def add_user_model_arguments(g: Any, time_scale: bool = True) -> None:
    """Adds the flags to a parser or argument group."""
    g.add_argument(
        "--read-speed", type=positive(float), default=25.0, help="reading speed, chars/s (default: 25)"
    )
    g.add_argument(
        "--read-speed-std", type=non_negative, default=0.0, help="per-session std dev (default: 0)"
    )
    g.add_argument(
        "--type-speed", type=positive(float), default=6.0, help="typing speed, chars/s (default: 6)"
    )
    g.add_argument(
        "--type-speed-std", type=non_negative, default=0.0, help="per-session std dev (default: 0)"
    )
    g.add_argument(
        "--min-speed", type=positive(float), default=1.0, help="floor of drawn speeds (default: 1)"
    )
    if time_scale:
        g.add_argument("--time-scale", type=positive(float), default=1.0, help="divide every human wait by F")
    g.add_argument("--no-advisories", action="store_true", help="send no advisories (baselines)")
    g.add_argument("--advisory-miss-rate", type=rate, default=0.0, help="fraction of advisories not sent")
    g.add_argument(
        "--advisory-spurious-rate",
        type=rate,
        default=0.0,
        help="fraction of answers followed by an advisory for a draft that is abandoned",
    )


def user_model_from_args(args: argparse.Namespace) -> UserModel:
    """Raises ValueError naming the flag when a combination is invalid."""
    return UserModel(
        read_speed=args.read_speed,
        read_speed_std=args.read_speed_std,
        type_speed=args.type_speed,
        type_speed_std=args.type_speed_std,
        min_speed=args.min_speed,
        time_scale=getattr(args, "time_scale", 1.0),
        advisories=not args.no_advisories,
        advisory_miss_rate=args.advisory_miss_rate,
        advisory_spurious_rate=args.advisory_spurious_rate,
    )
