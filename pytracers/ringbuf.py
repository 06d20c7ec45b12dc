"""Reading BPF ring buffers (BPF_MAP_TYPE_RINGBUF) from Python.

pytracers maps the ring itself instead of going through libbpf's
``ring_buffer__poll``: a C-to-Python callback per record costs about a
microsecond, while reading the shared mapping from Python costs only the
Python work per record, and lets the batch reader view a run of fixed-size
records with numpy without touching each one.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we write
it); the next page holds the producer position (read-only to us), followed by
the data area mapped twice in a row, so a record that wraps around the end is
still contiguous in our mapping.  Each record starts with an 8-byte header: a
u32 length with the BUSY (still being written) and DISCARD bits, and a u32
page offset.  Records are 8-byte aligned.

Memory ordering: on x86-64 (TSO), plain loads of the producer position before
loads of record data, and a plain store of the consumer position after them,
give the acquire/release order the kernel expects.  The reader refuses to run
on other architectures rather than risk torn reads.
"""
from __future__ import annotations

import mmap
import os
import platform
import select
import struct
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, List, Optional

from ._resource import Resource
from .errors import BadArgumentError, CallbackError, NotSupportedError

if TYPE_CHECKING:
    from .maps import Map

__all__ = ["RingBuffer", "BUSY_BIT", "DISCARD_BIT", "HEADER_SIZE"]

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
PAGE_SIZE = mmap.PAGESIZE
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Decoder = Callable[[Any, int], Any]


def _release(epoll: Any, cons: mmap.mmap, prod: mmap.mmap, fd: int) -> None:
    for thing in (epoll, cons, prod):
        try:
            thing.close()
        except Exception:  # pragma: no cover - exported views may pin a mapping
            pass
    os.close(fd)


class RingBuffer(Resource):
    """A consumer of one ring-buffer map.

    ``decoder(buffer, offset) -> record`` turns a record's bytes into a Python
    value (Object.ring_buffer(event="struct_name") builds one from BTF); by
    default records are delivered as ``bytes``.

    ``latency`` (seconds) bounds how long a record may wait when the producer
    suppresses wakeups (pytracers' tracers only wake the reader past a
    threshold): blocking reads never sleep longer than this before looking.
    """

    _what = "ring buffer"

    def __init__(self, m: "Map", *, decoder: Optional[Decoder] = None,
                 event: Optional[str] = None,
                 callback: Optional[Callable[[Any], Any]] = None,
                 latency: float = 0.1) -> None:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise NotSupportedError("the mmap ring-buffer reader",
                                    f"only x86-64 is supported, this is {platform.machine()}")
        if latency <= 0:
            raise BadArgumentError("latency must be a positive number of seconds")
        self.map = m                  # keeps the object alive
        self.event = event
        self.decoder = decoder
        self.callback = callback
        self.latency = float(latency)
        self.size = int(m.max_entries)
        self._mask = self.size - 1
        fd = os.dup(m.fd)
        try:
            cons = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                             offset=0)
            try:
                prod = mmap.mmap(fd, PAGE_SIZE + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ,
                                 offset=PAGE_SIZE)
            except BaseException:
                cons.close()
                raise
            ep = select.epoll()
            ep.register(fd, select.EPOLLIN)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._cons = cons
        self._prod = prod
        self._epoll = ep
        self._own(_release, ep, cons, prod, fd)
        self.delivered = 0   # records handed to the caller
        self.discarded = 0   # records the producer discarded (skipped)

    # -- positions --------------------------------------------------------------
    def _consumer_pos(self) -> int:
        return int(_U64.unpack_from(self._cons, 0)[0])

    def _producer_pos(self) -> int:
        return int(_U64.unpack_from(self._prod, 0)[0])

    def _set_consumer_pos(self, pos: int) -> None:
        _U64.pack_into(self._cons, 0, pos)

    def pending_bytes(self) -> int:
        """Bytes written by the producer and not yet consumed."""
        self._check()
        return self._producer_pos() - self._consumer_pos()

    def fileno(self) -> int:
        """An epoll fd that becomes readable when the kernel wakes consumers."""
        self._check()
        return self._epoll.fileno()

    # -- reading ---------------------------------------------------------------
    def consume(self, callback: Optional[Callable[[Any], Any]] = None,
                limit: Optional[int] = None) -> int:
        """Deliver every record available now; return how many were delivered.

        ``callback(record)`` may return None/True to go on, or False (or a
        negative int) to stop after this record.  An exception it raises
        propagates after the consumer position has moved past the record.
        """
        self._check()
        cb = callback or self.callback
        if cb is None:
            raise BadArgumentError("consume() needs a callback (or one given to the RingBuffer)")
        return self._consume(cb, limit)

    def _consume(self, cb: Callable[[Any], Any], limit: Optional[int]) -> int:
        data = self._prod
        base = PAGE_SIZE
        mask = self._mask
        dec = self.decoder
        unpack_u32 = _U32.unpack_from
        n = 0
        cons = self._consumer_pos()
        try:
            while True:
                prod = self._producer_pos()
                if cons >= prod:
                    return n
                while cons < prod:
                    off = base + (cons & mask)
                    hdr = unpack_u32(data, off)[0]
                    if hdr & BUSY_BIT:
                        return n       # the producer is still writing this one
                    length = hdr & ~(BUSY_BIT | DISCARD_BIT)
                    start = off + HEADER_SIZE
                    cons += (length + HEADER_SIZE + 7) & ~7
                    if hdr & DISCARD_BIT:
                        self.discarded += 1
                        continue
                    rec = dec(data, start) if dec is not None else data[start:start + length]
                    n += 1
                    r = cb(rec)
                    if r is not None and r is not True:
                        if r is False or (type(r) is int and r < 0):
                            return n
                        if type(r) is not int:
                            raise CallbackError(
                                f"ring-buffer callback returned {type(r).__name__}; return "
                                "None or True to go on, False or a negative int to stop")
                    if limit is not None and n >= limit:
                        return n
                self._set_consumer_pos(cons)
        finally:
            self._set_consumer_pos(cons)
            self.delivered += n

    def poll(self, timeout: Optional[float] = None,
             callback: Optional[Callable[[Any], Any]] = None) -> int:
        """Wait up to ``timeout`` seconds (None: forever) for records, then
        deliver them to the callback; returns how many were delivered."""
        self._check()
        cb = callback or self.callback
        if cb is None:
            raise BadArgumentError("poll() needs a callback (or one given to the RingBuffer)")
        n = self._consume(cb, None)
        if n:
            return n
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            wait = self.latency
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return self._consume(cb, None)
            self._epoll.poll(wait)
            n = self._consume(cb, None)
            if n:
                return n

    def read(self, timeout: float = 0.0) -> List[Any]:
        """Records available now, or waiting up to ``timeout`` for the first."""
        out: List[Any] = []
        self.poll(timeout, out.append)
        return out

    def events(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """Iterate over records as they arrive, for ``timeout`` seconds in all
        (None: until the ring buffer is closed or the loop breaks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        buf: List[Any] = []
        while not self.closed:
            if deadline is None:
                left = None
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    buf.clear()
                    self._consume(buf.append, None)
                    yield from buf
                    return
            buf.clear()
            self.poll(left, buf.append)
            yield from buf

    def __iter__(self) -> Iterator[Any]:
        return self.events()

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for rec in ring``: see :mod:`pytracers.aio`."""
        from .aio import events
        return events(self)

    def __repr__(self) -> str:
        return f"<RingBuffer {self.map.name} {self.size} bytes{' closed' if self.closed else ''}>"
