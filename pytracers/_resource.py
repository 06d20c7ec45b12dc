"""Lifetime of kernel resources: close() safe twice, context manager, finalizer.

Every object that owns a kernel resource (an fd, a link, a ring mapping)
derives from :class:`Resource`.  ``close()`` releases it and may be called any
number of times; ``with`` closes it on exit; a ``weakref.finalize`` backstop
releases it when the Python object is collected without having been closed.
The finalizer holds only the release function and the raw handle, never the
object itself.

Ownership: a parent (a loaded object) holds its children (links, ring
buffers) until they are closed, so ``prog.attach()`` stays attached even if
the caller drops the returned link -- detaching is always explicit
(``link.close()``) or follows the parent's close.  A child keeps a strong
reference to its parent, so a parent is never collected under a live child.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List, Optional, TypeVar, cast

from .errors import ClosedError


_R = TypeVar("_R", bound="Resource")


class Resource:
    _finalizer: Optional[weakref.finalize] = None
    _what = "resource"

    def _own(self, release: Callable[..., Any], *args: Any) -> None:
        """Register ``release(*args)`` as what close() (or the collector) runs."""
        fin = weakref.finalize(self, release, *args)
        # The kernel frees fds at exit: no exit-time list of instances.  (Set
        # through Any: the typeshed of mypy 1.x, the last mypy for Python 3.9,
        # declares ``atexit`` beside an empty ``__slots__`` and rejects it.)
        cast(Any, fin).atexit = False
        self._finalizer = fin
        self._children: Dict[int, "Resource"] = {}
        self._parent: Optional["Resource"] = None

    def _adopt(self, child: "Resource") -> None:
        """Hold ``child`` until it closes; close it when this resource closes."""
        self._children[id(child)] = child
        child._parent = self

    @property
    def closed(self) -> bool:
        fin = self._finalizer
        return fin is None or not fin.alive

    def _check(self) -> None:
        if self.closed:
            raise ClosedError(self._what)

    def close(self) -> None:
        """Release the kernel resource (and any children). Safe to call twice."""
        fin = self._finalizer
        if fin is None or not fin.alive:
            return
        children = getattr(self, "_children", None)
        if children:
            self._close_children(list(children.values()))
            children.clear()
        fin()
        parent = getattr(self, "_parent", None)
        if parent is not None:
            parent._children.pop(id(self), None)

    def _close_children(self, children: List["Resource"]) -> None:
        """Close the children, last adopted first (a subclass may close some
        of them together)."""
        for child in reversed(children):
            child.close()

    def __enter__(self: _R) -> _R:
        self._check()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ``async with`` too (closing never blocks): see pytracers.aio
    async def __aenter__(self: _R) -> _R:
        self._check()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
