"""Pages of a list (AIP-158): sizes, tokens, the last page, and the tokens refused."""

from __future__ import annotations

import base64

import pytest

from lb_service.errors import InvalidArgument
from lb_service.paging import MAX_PAGE_SIZE, page

ITEMS = tuple(range(7))


def _walk(items: tuple[int, ...], size: int, scope: str = "s") -> list[tuple[int, ...]]:
    pages, token = [], ""
    while True:
        cut = page(items, size, token, scope)
        pages.append(cut.items)
        token = cut.next_page_token
        if not token:
            return pages


def test_size_0_returns_everything_without_a_token() -> None:
    """page_size 0 is the behaviour before paging: every item, no next page."""
    cut = page(ITEMS, 0, "", "s")
    assert (cut.items, cut.next_page_token) == (ITEMS, "")


def test_pages_cover_the_list_in_order_and_the_last_has_no_token() -> None:
    """Following next_page_token yields every item once, in order; an exact fit ends cleanly."""
    assert _walk(ITEMS, 3) == [(0, 1, 2), (3, 4, 5), (6,)]
    assert _walk(ITEMS[:6], 3) == [(0, 1, 2), (3, 4, 5)]
    assert _walk((), 3) == [()]


def test_a_page_size_above_the_maximum_is_served_as_the_maximum() -> None:
    """A page_size over MAX_PAGE_SIZE is coerced to it, not refused."""
    items = tuple(range(MAX_PAGE_SIZE + 5))
    first = page(items, MAX_PAGE_SIZE * 10, "", "s")
    assert len(first.items) == MAX_PAGE_SIZE
    assert page(items, 0, first.next_page_token, "s").items == items[MAX_PAGE_SIZE:]


def test_the_size_may_change_between_pages() -> None:
    """A token records where the next page starts, not the size it was cut with."""
    first = page(ITEMS, 2, "", "s")
    assert page(ITEMS, 4, first.next_page_token, "s").items == (2, 3, 4, 5)


def test_a_token_past_a_shrunken_list_gives_an_empty_last_page() -> None:
    """If items were removed since the token was issued, the next page is empty and last."""
    token = page(ITEMS, 5, "", "s").next_page_token
    cut = page(ITEMS[:3], 5, token, "s")
    assert (cut.items, cut.next_page_token) == ((), "")


def test_negative_size_is_invalid() -> None:
    """A negative page_size is INVALID_ARGUMENT, naming the field."""
    with pytest.raises(InvalidArgument, match=r"page_size must be >= 0 \(0: everything\), got -1"):
        page(ITEMS, -1, "", "s")


def _encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        _encoded("not json"),
        _encoded("[1]"),
        _encoded('{"v": 2, "o": 3}'),
        _encoded('{"v": 1, "o": 0}'),
        _encoded('{"v": 1, "o": true}'),
        _encoded('{"v": 1, "o": "3"}'),
    ],
    ids=["not-base64", "not-json", "not-an-object", "other-version", "zero", "bool", "string"],
)
def test_a_token_this_service_did_not_issue_is_invalid(token: str) -> None:
    """A token that is not one this service issued is INVALID_ARGUMENT, saying how to start over."""
    with pytest.raises(InvalidArgument, match="not a next_page_token this service issued"):
        page(ITEMS, 2, token, "s")


def test_a_token_from_another_request_is_invalid() -> None:
    """A token only continues the request (scope) it was issued for."""
    token = page(ITEMS, 2, "", 'GetLoads ["a", "b"]').next_page_token
    with pytest.raises(InvalidArgument, match="issued for a different request"):
        page(ITEMS, 2, token, 'GetLoads ["a"]')
