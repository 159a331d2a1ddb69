"""The error hierarchy every component raises, and its mapping to gRPC and HTTP at the edge.

    SymphonyError
    ├── InvalidArgument      -> INVALID_ARGUMENT / 400   (names the offending field)
    ├── NotFound             -> NOT_FOUND / 404
    ├── ResourceExhausted    -> RESOURCE_EXHAUSTED / 429
    ├── Unavailable          -> UNAVAILABLE / 503        (retryable; carries retry_after_s)
    └── FailedPrecondition   -> FAILED_PRECONDITION / 409

Core objects raise these; only the gRPC and HTTP shells translate them, so the functional core
stays free of transport types.
"""

from __future__ import annotations

import grpc


class SymphonyError(Exception):
    """Base class: a message a user can act on, and the status it maps to."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SymphonyError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(SymphonyError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class ResourceExhausted(SymphonyError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class FailedPrecondition(SymphonyError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Unavailable(SymphonyError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


HTTP_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}


def http_error_body(status: int, message: str, param: str | None = None) -> dict[str, object]:
    """The OpenAI-style JSON error body, so OpenAI clients surface the message unchanged."""
    return {
        "error": {
            "message": message,
            "type": HTTP_ERROR_TYPES.get(status, "error"),
            "param": param,
            "code": status,
        }
    }
