"""Keyset pagination: a page of items and the cursor for the next one."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec
from litestar.params import Parameter

T = TypeVar("T")

# A query parameter: Litestar checks Parameter bounds there (msgspec.Meta it does not).
Limit = Annotated[int, Parameter(ge=1, le=500)]
DEFAULT_LIMIT = 100


class Page(msgspec.Struct, Generic[T], frozen=True):
    """``next_after`` is the id to pass as ``after`` for the next page; null on the last page."""

    items: list[T]
    next_after: int | None


def page_of(items: list[T], limit: int, key: str = "id") -> Page[T]:
    """Items were fetched with LIMIT limit+1: the extra one only tells that more exist."""
    more = len(items) > limit
    items = items[:limit]
    return Page(items=items, next_after=getattr(items[-1], key) if more and items else None)
