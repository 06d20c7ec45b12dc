"""Attach every program of an object whose section says where it goes
(:meth:`pytracers.object.Object.attach_all`), as libbpf's skeleton auto-attach
does, and the result: :class:`AttachedAll`."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Dict, Iterator, Sequence

from . import kinds
from .errors import ENOTSUPP, NotSupportedError, PytracersError
from .link import Link

if TYPE_CHECKING:
    from .program import Program

__all__ = ["AttachedAll", "attach_all"]


class AttachedAll:
    """What :meth:`Object.attach_all` did: ``links`` (program name -> Link,
    in the object's order) and ``skipped`` (program name -> why it was left
    alone).  Iterating yields the links; ``close()`` (or ``with``) detaches
    them all."""

    def __init__(self, links: Dict[str, Link], skipped: Dict[str, str]) -> None:
        self.links = links
        self.skipped = skipped

    def __iter__(self) -> Iterator[Link]:
        return iter(list(self.links.values()))

    def __len__(self) -> int:
        return len(self.links)

    def __getitem__(self, name: str) -> Link:
        return self.links[name]

    def close(self) -> None:
        for link in reversed(list(self.links.values())):
            link.close()

    def __enter__(self) -> "AttachedAll":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AttachedAll links={list(self.links)} skipped={list(self.skipped)}>"


def attach_all(programs: Sequence["Program"]) -> AttachedAll:
    """Attach every program whose section says where it goes, as libbpf's
    skeleton auto-attach does: programs whose section names no target (or
    whose type needs the caller's perf event, cgroup or interface) are
    skipped, with the reason; the first program the kernel refuses stops the
    attach, detaches what was attached, and raises its error (``.program``
    names it)."""
    links: Dict[str, Link] = {}
    skipped: Dict[str, str] = {}
    try:
        for prog in programs:
            why = prog.auto_attach_skip()
            if why is not None:
                skipped[prog.name] = why
                continue
            try:
                links[prog.name] = prog.attach_auto()
            except NotSupportedError as e:
                if e.errno in (errno.EOPNOTSUPP, ENOTSUPP) and kinds.KINDS.get(prog.kind) is None:
                    skipped[prog.name] = e.reason    # libbpf has no auto-attach for it
                    continue
                raise
    except PytracersError as e:
        for link in reversed(list(links.values())):
            link.close()
        if getattr(e, "program", None) is None:
            e.program = prog.name    # type: ignore[attr-defined]
        raise
    return AttachedAll(links, skipped)
