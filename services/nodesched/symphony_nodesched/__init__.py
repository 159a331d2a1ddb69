"""The node scheduler: one per GPU node, next to its engine (see docs/nodesched.md).

The I/O-free core — :class:`~symphony_nodesched.simnode.SimNode` (simulated engine, K,V tier manager,
transfer links) — is shared by the live ``sim`` backend and the virtual-time simulator; the gRPC
service depends only on the backend contract in :mod:`symphony_nodesched.engine`.
"""
