"""One shape for every list the API answers: `{"items": [...], "total": N}`, built by one helper."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from careloop.errors import NotFound

T = TypeVar("T")
U = TypeVar("U")


class Page(BaseModel, Generic[T]):
    """A page of a list: the items asked for and how many match in all."""

    items: list[T]
    total: int

    def one(self, missing: str) -> T:
        """The item of a page looked up by its id; NotFound (a 404 saying `missing`) when there is none."""
        if not self.items:
            raise NotFound(missing)
        return self.items[0]

    def map(self, read: Callable[[T], U]) -> Page[U]:
        """The same page with each item read into another shape (a stored row into what the API answers)."""
        return Page[Any](items=[read(item) for item in self.items], total=self.total)


def paginate(rows: Sequence[dict[str, Any]], read: Callable[[dict[str, Any]], T]) -> Page[T]:
    """A page from rows that carry `total` (`count(*) OVER () AS total`, or a count of the matching rows): each row
    read into an item once `total` is taken out of it. The rows are the caller's own, fresh from the database, and
    are changed in place: copying each without `total` took a tenth of the dispatch board's 500 orders."""
    total = int(rows[0]["total"]) if rows else 0
    for row in rows:
        del row["total"]
    return Page[Any](items=[read(row) for row in rows], total=total)


def whole(items: Sequence[T]) -> Page[T]:
    """A page holding the whole of a short list that is never paged (the models catalog, the engine's jobs)."""
    return Page[Any](items=list(items), total=len(items))
