"""Symphony's global scheduler: node registry, session map, routing policies, the router with
retry, the ``symphony.v1.Scheduler`` gRPC service and the OpenAI-compatible HTTP front door.

The I/O-free :class:`symphony_scheduler.core.SchedulerCore` and the policies in
:mod:`symphony_scheduler.policies` are what the live service and ``symphony simulate`` share.
"""
