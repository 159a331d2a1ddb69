"""Settings every test process needs before gRPC is first imported.

The integration tests fork the stack's processes from this process while it has gRPC calls in
flight; gRPC's fork handlers can then abort the child before its exec (grpc/grpc#43055). The
children exec at once, so none are needed.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
