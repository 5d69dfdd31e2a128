"""
Read-only, case-insensitive HTTP header maps.

The relay forwards a sender's upgrade headers to the listener as a JSON object whose name spelling is
not guaranteed (Azure and our gateway preserve it; other relays may lower-case). Applications should be
able to ask for C{headers["sec-websocket-protocol"]} either way.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping


class Headers(Mapping[str, str]):
    """
    An immutable header map that finds names regardless of case.

    Iteration yields the names in their original spelling.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in (items or {}).items():
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> ItemsView[str, str]:
        """The names (original spelling) and values; iterated without looking each name up again."""
        return _Items(self)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class _Items(ItemsView[str, str]):
    """L{Headers.items}: C{Mapping}'s view iterates the names and looks each one up (a relayed request's every field)."""

    _mapping: Headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._mapping._items.values())


def parse_subprotocols(value: str | None) -> tuple[str, ...]:
    """The subprotocols offered in a C{Sec-WebSocket-Protocol} value, in order, without blanks."""
    if not value:
        return ()
    return tuple(p.strip() for p in value.split(",") if p.strip())
