"""The server's process-level options: where it listens, TLS, auth, limits and intervals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for TLS; with ``client_ca`` set, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials for these files."""
        client_ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Process-level options of the server, with the documented defaults."""

    #: Address to bind; loopback by default so nothing is exposed by accident.
    listen: str = "127.0.0.1:50051"
    #: Seconds in-flight RPCs get to finish on shutdown.
    grace_period_s: float = 5.0
    #: Seconds between sweeps that expire overdue leases and idle sessions, and between
    #: two checks of heartbeat agents' silence (a missed heartbeat shows within it).
    sweep_interval_s: float = 1.0
    #: Serve TLS (and mutual TLS) with these files; plaintext when None.
    tls: TlsFiles | None = None
    #: Bearer token admin RPCs require; no token means no authorization.
    admin_token: str | None = field(default=None, repr=False)
    #: Require the token on every lb.v1 RPC, not only the admin ones.
    auth_all_rpcs: bool = False
    #: Export Prometheus metrics over HTTP on this HOST:PORT; off when empty.
    metrics_listen: str = ""
    #: Largest request accepted, in bytes; larger ones are refused with RESOURCE_EXHAUSTED.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Seconds between two saves of the state file (when there is one).
    state_interval_s: float = 5.0
    #: Seconds between two checks that the store answers (when the server is given one).
    store_check_interval_s: float = 1.0

    def exposure_warnings(self) -> list[str]:
        """What is unsafe about serving beyond loopback with these options."""
        host = self.listen.rpartition(":")[0].strip("[]")
        if host in {"localhost", "127.0.0.1", "::1"} or host.startswith("127."):
            return []
        warnings = []
        if self.tls is None:
            warnings.append("serving plaintext beyond loopback: set --tls-cert and --tls-key")
        if self.admin_token is None:
            warnings.append("admin RPCs are open to anyone who can connect: set --admin-token-file")
        return warnings


class ListenError(RuntimeError):
    """The server could not bind its listen address."""
