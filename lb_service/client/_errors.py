"""ClientError: the one exception a failed RPC raises, translated from grpc in one place."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lb_service.client._wire import ERROR_DOMAIN


class ClientError(Exception):
    """An RPC failed: its status code, the server's message and the stable ErrorInfo reason.

    ``str(error)`` reads like ``FAILED_PRECONDITION: no agent serves model 'x'``. Branch
    on ``code`` for the kind of failure and on ``reason`` (e.g. ``NO_ELIGIBLE_AGENT``,
    ``""`` when the server sent none) for its cause; never parse ``message``.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        """An error with ``code`` (a grpc.StatusCode), the server's ``message`` and ``reason``."""
        super().__init__(code, message, reason)
        self.code = code
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"ClientError({self.code.name}, {self.message!r}, reason={self.reason!r})"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ClientError:
        """Translate a grpc error (sync or asyncio) into a ClientError."""
        # Every RpcError grpc raises for a call is also a grpc.Call (or an AioRpcError),
        # which carry code() and details(); anything else is reported as UNKNOWN.
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        return cls(code, message or "", _reason(error))


def _reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason in the lb.v1 domain from grpc-status-details-bin, or ""."""
    if not hasattr(error, "trailing_metadata"):
        return ""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, DecodeError):
        # Details that contradict the status, or are not a Status at all, came from
        # something other than lb-service (a proxy, say); they carry no reason we know.
        return ""
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return str(info.reason)
    return ""
