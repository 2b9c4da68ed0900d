"""Errors of the serving side, shaped as TensorFlow Serving reports them.

`ServingError` carries a canonical status code (the names of ``grpc.StatusCode`` and
``tensorflow/core/protobuf/error_codes.proto``) and a message. gRPC handlers abort
with that code; the REST handler answers ``{"error": message}`` with the HTTP status
TensorFlow Serving maps the code to (``http_server.cc``: ``ToHTTPStatusCode``).

`ServingConfigError` is bad operator input (a flag, a config file, a model folder):
the command line turns it into exit code 2 with one line on stderr.
"""

from __future__ import annotations

OK = "OK"
CANCELLED = "CANCELLED"
UNKNOWN = "UNKNOWN"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
NOT_FOUND = "NOT_FOUND"
ALREADY_EXISTS = "ALREADY_EXISTS"
PERMISSION_DENIED = "PERMISSION_DENIED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
ABORTED = "ABORTED"
OUT_OF_RANGE = "OUT_OF_RANGE"
UNIMPLEMENTED = "UNIMPLEMENTED"
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
DATA_LOSS = "DATA_LOSS"
UNAUTHENTICATED = "UNAUTHENTICATED"

# TensorFlow Serving's canonical-code -> HTTP status table.
HTTP_STATUS: dict[str, int] = {
    OK: 200,
    CANCELLED: 499,
    UNKNOWN: 500,
    INVALID_ARGUMENT: 400,
    DEADLINE_EXCEEDED: 504,
    NOT_FOUND: 404,
    ALREADY_EXISTS: 409,
    PERMISSION_DENIED: 403,
    RESOURCE_EXHAUSTED: 429,
    FAILED_PRECONDITION: 400,
    ABORTED: 409,
    OUT_OF_RANGE: 400,
    UNIMPLEMENTED: 501,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    DATA_LOSS: 500,
    UNAUTHENTICATED: 401,
}

# error_codes.proto numbers, for StatusProto.error_code.
CODE_NUMBER: dict[str, int] = {
    OK: 0,
    CANCELLED: 1,
    UNKNOWN: 2,
    INVALID_ARGUMENT: 3,
    DEADLINE_EXCEEDED: 4,
    NOT_FOUND: 5,
    ALREADY_EXISTS: 6,
    PERMISSION_DENIED: 7,
    RESOURCE_EXHAUSTED: 8,
    FAILED_PRECONDITION: 9,
    ABORTED: 10,
    OUT_OF_RANGE: 11,
    UNIMPLEMENTED: 12,
    INTERNAL: 13,
    UNAVAILABLE: 14,
    DATA_LOSS: 15,
    UNAUTHENTICATED: 16,
}


class ServingError(Exception):
    """A request failed with a canonical status ``code`` and a human ``message``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def __repr__(self) -> str:
        return f"ServingError({self.code}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(UNAVAILABLE, message)


def internal(message: str) -> ServingError:
    return ServingError(INTERNAL, message)


class ServingConfigError(ValueError):
    """Bad operator input: a flag, a config file or a model folder we cannot use."""
