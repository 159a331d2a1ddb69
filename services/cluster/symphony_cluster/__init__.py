"""The ``symphony`` command: a local stack of real processes and the virtual-time simulator."""

import os

# The launcher forks its children after it has used gRPC; gRPC's fork handlers would then run in
# the child between fork and exec and can abort it. The children exec at once, so none are needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
