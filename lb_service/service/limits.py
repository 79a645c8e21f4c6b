"""Process limits the server raises at start: open files, for one kept-alive socket per agent.

A prober keeps one connection open to every engine agent between probes, so a fleet of
a thousand agents needs a thousand sockets beside the gRPC server's own; the usual soft
limit (1,024) would make probes fail with ``EMFILE`` long before the hard limit does.
"""

from __future__ import annotations

import resource

import structlog

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)

#: What to ask for when the hard limit is unlimited (Linux refuses more than fs.nr_open).
_UNLIMITED_ASK = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    Never raises: when the limit cannot be raised, one warning says what it stays at.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _UNLIMITED_ASK if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as error:
        log.warning(
            "open_file_limit_kept",
            soft=soft,
            hard=hard,
            reason=f"cannot raise it ({error}): probing more agents than this fails",
        )
        return soft
    log.debug("open_file_limit_raised", previous=soft, soft=wanted)
    return wanted
