"""Connection settings shared by both clients: credentials, auth metadata, deadlines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import grpc

#: Where lb-service listens unless told otherwise.
DEFAULT_TARGET = "127.0.0.1:50051"
#: Seconds a unary call may take, retries and their waits included.
DEFAULT_TIMEOUT_S = 5.0
#: The grpc.health.v1 service name the server reports lb.v1's status under.
HEALTH_SERVICE = "lb.v1.LoadBalancer"
#: Channel options of both clients. Round robin spreads calls over every address the
#: target names or resolves to (``ipv4:127.0.0.1:50061,127.0.0.1:50062``, a DNS name
#: with several records), so one client uses every replica sharing a Redis store; with
#: a single address it behaves as gRPC's default (pick_first) does.
CHANNEL_OPTIONS: tuple[tuple[str, str], ...] = (("grpc.lb_policy_name", "round_robin"),)


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the server: its address, TLS credentials (None: plaintext), call metadata."""

    target: str
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...] = field(repr=False)


def connection(
    target: str,
    *,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
    tls: bool,
    token: str | None,
) -> Connection:
    """Check the connection options and build the credentials and metadata they imply."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("mutual TLS needs both certificate_chain and private_key")
    secure = tls or any(
        pem is not None for pem in (root_certificates, certificate_chain, private_key)
    )
    credentials = (
        grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        if secure
        else None
    )
    return Connection(target, credentials, _auth_metadata(token))


def _auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    if token is None:
        return ()
    # grpc only takes printable ASCII in metadata values, and would reject the token
    # on every call; say so once, here, without echoing the secret.
    if not token or not token.isascii() or not token.isprintable() or token != token.strip():
        raise ValueError("token must be non-empty printable ASCII without surrounding spaces")
    return (("authorization", f"Bearer {token}"),)


def check_timeout(timeout: float) -> float:
    """Return ``timeout`` if it is a usable deadline in seconds (finite and > 0)."""
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    return timeout
