"""The one place domain errors become gRPC status codes."""

from __future__ import annotations

import re

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from lb_service import errors
from lb_service.client._wire import ERROR_DOMAIN

#: Most specific first: the first matching class decides the code.
_CODES: tuple[tuple[type[errors.LoadBalancerError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.NoAgentsRegistered, grpc.StatusCode.UNAVAILABLE),
    (errors.NoEligibleAgent, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AllAgentsBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.AllAgentsSaturated, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.AllAgentsDraining, grpc.StatusCode.UNAVAILABLE),
)

#: Longest message sent, in UTF-8 bytes. A message that quotes a huge input (a 1 MB
#: request id) must still fit in the response trailers: clients accept 8 KiB of metadata
#: by default, the message travels twice (grpc-message, percent-encoded, and the details).
MAX_MESSAGE_BYTES = 1024
_CUT = " … "
#: The BadRequest field path and description, cut shorter: with them the message
#: travels three times, and the trailers must stay well under 8 KiB.
MAX_FIELD_BYTES = 256
MAX_DESCRIPTION_BYTES = 512


def code_for(error: errors.LoadBalancerError) -> grpc.StatusCode:
    """Return the status code for a domain error; an unmapped error is a bug and re-raised."""
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    raise error


def reason_for(error: errors.LoadBalancerError) -> str:
    """Return a stable machine-readable reason, e.g. ``NO_ELIGIBLE_AGENT``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).upper()


def fit(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """Return ``message``, or its start and end around a cut if it is over ``limit`` bytes."""
    data = message.encode()
    if len(data) <= limit:
        return message
    # Keep both ends: the start says what was wrong, the end often what to do about it.
    half = (limit - len(_CUT.encode())) // 2
    head = data[:half].decode(errors="ignore")
    tail = data[-half:].decode(errors="ignore")
    return head + _CUT + tail


def to_status(error: errors.LoadBalancerError) -> grpc.Status:
    """Build the full status: code, message, ErrorInfo and, for bad input, BadRequest.

    The ErrorInfo reason lets clients in any language branch on the cause without
    parsing the human-readable message; the BadRequest field violation (a request field
    path such as ``candidates[2].hardware.vram_gb``, empty for the request as a whole,
    and a description) is what generic tools and form-filling UIs show next to a field.
    """
    code = code_for(error)
    message = fit(str(error))
    info = error_details_pb2.ErrorInfo(reason=reason_for(error), domain=ERROR_DOMAIN)
    detail = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    detail.details.add().Pack(info)
    if isinstance(error, errors.InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=fit(error.field, MAX_FIELD_BYTES),
            description=fit(message, MAX_DESCRIPTION_BYTES),
        )
        detail.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status: grpc.Status = rpc_status.to_status(detail)
    return status
