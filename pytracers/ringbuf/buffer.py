"""RingBuffer: a real ring's mapping.

The parsing is :class:`~pytracers.ringbuf.RingReader`'s (``records.py``);
the reading API, the waiting, the threads and the lifetime are
:class:`~pytracers.eventbuf.EventBuffer`'s (shared with the perf-buffer
reader, ``consume_views`` included); this module maps the ring and makes
its epoll fd -- the contract is stated in :mod:`pytracers.ringbuf`.
"""
from __future__ import annotations

import mmap
import os
import select
from functools import partial
from typing import TYPE_CHECKING, Any, List, Optional

from ..eventbuf import EventBuffer, check_latency, event_layout_of, ring_fence, wake_pipe
from .records import PAGE_SIZE, Callback, Decoder, RingReader

if TYPE_CHECKING:
    from ..maps import Map

__all__ = ["RingBuffer"]


def _release(reader: RingReader, epoll: Any, cons: mmap.mmap, prod: mmap.mmap,
             fds: List[int]) -> None:
    reader._detach()
    for thing in (epoll, cons, prod):
        try:
            thing.close()
        except Exception:  # pragma: no cover - a view still held elsewhere pins the mapping
            pass
    for fd in fds:
        os.close(fd)


class RingBuffer(EventBuffer):
    """A consumer of one ring-buffer map.

    ``decoder(buffer, offset) -> record`` turns a record's bytes into a Python
    value; with ``event="struct_name"`` (and no decoder) records are decoded
    through that struct's BTF layout; otherwise they are delivered as
    ``bytes``.  ``dtype`` is the numpy dtype
    of :meth:`read_batch` rows (from the event's BTF when ``event`` is given).

    ``latency`` (seconds) bounds how long a record may wait when the producer
    suppresses wakeups (pytracers' tracers only wake the reader once
    ``wakeup_bytes`` are pending, see pytracers.h): blocking reads never sleep
    longer than this before looking at the ring, so a trickle of events that
    never reaches the threshold is still delivered within ``latency``.

    Threads (the whole contract, and why, is in :mod:`pytracers.ringbuf`):
    any number of threads and asyncio tasks may read one ring at once.  The
    reads are serialised -- one call at a time moves records out and runs
    its callback -- so every record is delivered exactly once, to one of
    them.  Nothing is held across a ``yield`` (:meth:`events`,
    :meth:`iter_batches`) or while waiting, so interleaved or abandoned
    iterators block no one.  A read called from inside a callback of a read
    of the same ring raises :class:`~pytracers.errors.BusyError`.
    :meth:`close` may be called from any thread, a callback included: a
    blocked wait ends at once with ClosedError, and the ring is unmapped and
    its fds closed when the last reader leaves it.
    """

    _what = "ring buffer"

    def __init__(self, m: "Map", *, decoder: Optional[Decoder] = None,
                 event: Any = None,
                 callback: Optional[Callback] = None,
                 latency: float = 0.1, dtype: Any = None) -> None:
        fence = ring_fence()
        self.latency = check_latency(latency)
        self.map = m                  # keeps the object alive
        self.event = event
        self.callback = callback
        self.size = int(m.max_entries)
        self._dtype_arg = dtype
        # The event's layout: its decoder for records, its dtype for batches.
        # (a BTF struct name, C declarations, a numpy dtype, a ctypes.Structure
        # or a StructLayout: see pytracers.btf.foreign)
        layout = event_layout_of(m.object.btf, event)
        fds = [os.dup(m.fd)]
        fd = fds[0]
        maps: List[Any] = []
        try:
            maps.append(mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=0))
            maps.append(mmap.mmap(fd, PAGE_SIZE + 2 * self.size, mmap.MAP_SHARED,
                                  mmap.PROT_READ, offset=PAGE_SIZE))
            # close() writes to this pipe to end the waits on the ring at once
            wake_r, wake_w = wake_pipe()
            fds += [wake_r, wake_w]
            ep = select.epoll()
            maps.append(ep)
            ep.register(fd, select.EPOLLIN)
            ep.register(wake_r, select.EPOLLIN)
        except BaseException:
            for thing in reversed(maps):
                thing.close()
            for f in fds:
                os.close(f)
            raise
        cons, prod = maps[0], maps[1]
        self._fd = fd
        reader = RingReader(cons, prod, self.size, decoder=decoder, layout=layout,
                            fence=fence)
        self._start(reader, ep, wake_w, partial(_release, reader, ep, cons, prod, fds))

    def __repr__(self) -> str:
        return f"<RingBuffer {self.map.name} {self.size} bytes{' closed' if self.closed else ''}>"
