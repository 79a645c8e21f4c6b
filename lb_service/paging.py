"""Pages of a list result, as Google's AIP-158 describes them: page_size, page_token.

The token is opaque to clients, but only records where the next page starts, which
list it belongs to and the request it continues; the list is read again for each page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from lb_service.errors import InvalidArgument

#: Most items in one page; a larger page_size is served as this many (AIP-158: coerce).
MAX_PAGE_SIZE = 1000
_VERSION = 1

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Page(Generic[_T]):
    """One page of a list and the token of the next (empty when this page is the last)."""

    items: tuple[_T, ...]
    next_page_token: str


def page(items: Sequence[_T], page_size: int, page_token: str, scope: str) -> Page[_T]:
    """Cut the page ``page_token`` points at (the first when empty) out of ``items``.

    ``page_size`` 0 returns every item at once: ListAgents and GetLoads returned
    everything before they had pages, and a client that sends no size still gets
    that. ``scope`` names the RPC and the request fields a token is only valid with
    (GetLoads' agent_ids): a token used with another request is INVALID_ARGUMENT.
    """
    if page_size < 0:
        raise InvalidArgument(f"page_size must be >= 0 (0: everything), got {page_size}")
    start = _offset(page_token, scope) if page_token else 0
    if page_size == 0:
        return Page(tuple(items[start:]), "")
    end = start + min(page_size, MAX_PAGE_SIZE)
    # Items removed since the token was issued can leave it past the end: an empty last page.
    more = end < len(items)
    return Page(tuple(items[start:end]), _token(end, scope) if more else "")


def _fingerprint(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def _token(offset: int, scope: str) -> str:
    document = {"v": _VERSION, "o": offset, "s": _fingerprint(scope)}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def _offset(token: str, scope: str) -> int:
    """The offset a token issued by ``_token`` for ``scope`` records, else InvalidArgument."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError):
        document = None
    offset = document.get("o") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or document.get("v") != _VERSION
        or not isinstance(offset, int)
        or isinstance(offset, bool)
        or offset < 1
    ):
        raise InvalidArgument(
            "page_token is not a next_page_token this service issued; "
            "send an empty page_token to start from the first page"
        )
    if document.get("s") != _fingerprint(scope):
        raise InvalidArgument(
            "page_token was issued for a different request; send the same request fields "
            "(agent_ids) with every page, or an empty page_token to start again"
        )
    return offset
