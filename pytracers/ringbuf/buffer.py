"""RingBuffer: a real ring's mapping, waiting, threads and lifetime.

The parsing is :class:`~pytracers.ringbuf.RingReader`'s (``records.py``);
this module maps the ring, waits on it (epoll with a latency bound),
serialises the threads that read it and releases it -- the contract is
stated in :mod:`pytracers.ringbuf`.
"""
from __future__ import annotations

import mmap
import os
import select
import threading
import time
from functools import partial
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, List, Optional,
                    Tuple, TypeVar)

from .._resource import Resource
from ..errors import BadArgumentError, BadTypeError, BusyError, ClosedError
from .records import PAGE_SIZE, Callback, Decoder, RingReader, _np

if TYPE_CHECKING:
    import numpy

    from ..maps import Map

__all__ = ["RingBuffer"]

# Machines (os.uname().machine) whose memory model is TSO: loads are not
# reordered with loads, nor stores with earlier loads, so the reader needs no
# barrier (see the package's "Memory ordering").
TSO_MACHINES = ("x86_64",)


def ring_fence(machine: Optional[str] = None) -> Optional[Callable[[], Any]]:
    """The barrier the reader needs on this machine (or ``machine``): None on
    x86-64, libatomic's full fence elsewhere (arm64...)."""
    machine = os.uname().machine if machine is None else machine
    if machine in TSO_MACHINES:
        return None
    from .._libbpf import full_fence
    return full_fence()

_T = TypeVar("_T")


class _Gate:
    """Who is inside a ring buffer, and who releases it.

    ``mutex`` serialises the readers: it is held for one read call (moving
    records out of the ring and running the callback) and never across a
    ``yield``, an ``await`` or a wait for records; ``owner`` is the thread
    holding it, so that a read nested in one of its callbacks is refused
    instead of deadlocking.  ``users`` counts who is inside the mapping or
    the epoll fd (a read, a blocked wait, an asyncio reader's registration).
    :meth:`close` marks the gate closing, wakes the waiters (the ``wake``
    pipe is in the epoll set) and runs the release at once when no one is
    inside; otherwise the last one out runs it -- the ring is never unmapped
    nor its fds closed under a reader, and close() never waits for one.

    ``guard`` is reentrant and every step is ordered (count in, then look)
    so that a close() from a signal handler that interrupts this thread
    between two lines still leaves exactly one release, after the last user.
    """

    __slots__ = ("mutex", "guard", "owner", "users", "closing", "pending", "wake")

    def __init__(self, wake: int) -> None:
        self.mutex = threading.Lock()
        self.guard = threading.RLock()
        self.owner = 0
        self.users = 0
        self.closing = False
        self.pending: Optional[Callable[[], None]] = None
        self.wake = wake

    def enter(self) -> bool:
        """Count one user in; False (and not counted) once closing."""
        with self.guard:
            self.users += 1
            if not self.closing:
                return True
        self.leave()
        return False

    def leave(self) -> None:
        with self.guard:
            self.users -= 1
            if self.users or self.pending is None:
                return
            release, self.pending = self.pending, None
        release()

    def close(self, release: Callable[[], None]) -> None:
        with self.guard:
            self.closing = True
            try:
                os.write(self.wake, b"\0")     # ends every epoll wait on the ring, now and later
            except OSError:  # pragma: no cover - a one-byte write to an empty pipe
                pass
            if self.users:
                self.pending = release
                return
        release()


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


def _close(gate: _Gate, reader: RingReader, *resources: Any) -> None:
    """What close() (or the collector) runs: a read in progress stops after
    its current run of records; the ring is released once no one is inside."""
    reader.stop = True
    gate.close(partial(_release, reader, *resources))


class RingBuffer(Resource):
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
                 event: Optional[str] = None,
                 callback: Optional[Callback] = None,
                 latency: float = 0.1, dtype: Any = None) -> None:
        fence = ring_fence()
        if not isinstance(latency, (int, float)) or isinstance(latency, bool):
            raise BadTypeError("latency must be a number of seconds")
        if latency <= 0:
            raise BadArgumentError("latency must be a positive number of seconds")
        self.map = m                  # keeps the object alive
        self.event = event
        self.callback = callback
        self.latency = float(latency)
        self.size = int(m.max_entries)
        self._dtype_arg = dtype
        # The event's layout: its decoder for records, its dtype for batches.
        layout = m.object.btf.struct_layout(event) if event is not None else None
        fds = [os.dup(m.fd)]
        fd = fds[0]
        maps: List[Any] = []
        try:
            maps.append(mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE, offset=0))
            maps.append(mmap.mmap(fd, PAGE_SIZE + 2 * self.size, mmap.MAP_SHARED,
                                  mmap.PROT_READ, offset=PAGE_SIZE))
            # close() writes to this pipe to end the waits on the ring at once
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
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
        self._epoll = ep
        self._reader = RingReader(cons, prod, self.size, decoder=decoder, layout=layout,
                                  fence=fence)
        self._gate = _Gate(wake_w)
        self._own(_close, self._gate, self._reader, ep, cons, prod, fds)

    # -- one reader at a time ----------------------------------------------------------
    def _busy(self) -> BusyError:
        return BusyError(f"ring buffer {self.map.name!r}")

    def _inside(self, fn: Callable[..., _T], args: Tuple[Any, ...]) -> _T:
        """``fn(*args)`` with the reader lock held (by the caller)."""
        g = self._gate
        if not g.enter():
            raise ClosedError(self._what)
        g.owner = threading.get_ident()
        try:
            return fn(*args)
        finally:
            g.owner = 0
            g.leave()

    def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` as the one reader of the ring, after the thread
        reading now (if any) is done."""
        g = self._gate
        if g.owner == threading.get_ident():
            raise self._busy()
        with g.mutex:
            return self._inside(fn, args)

    def _read_nowait(self, fn: Callable[..., _T], *args: Any) -> Optional[_T]:
        """``fn(*args)`` as the one reader, or None at once if another thread
        is reading (an event loop must not wait for it)."""
        g = self._gate
        if g.owner == threading.get_ident():
            raise self._busy()
        if not g.mutex.acquire(False):
            return None
        try:
            return self._inside(fn, args)
        finally:
            g.mutex.release()

    def _consume_nowait(self, callback: Callback, limit: Optional[int]) -> Optional[int]:
        """:meth:`consume`, or None if another thread is reading (pytracers.aio)."""
        self._check()
        return self._read_nowait(self._reader.consume, callback, limit)

    def _read_batch_nowait(self, max_records: Optional[int]) -> Any:
        """:meth:`read_batch` (no wait), or None if another thread is reading."""
        self._check()
        return self._read_nowait(self._reader.read_batch, max_records, self.dtype)

    def _hold(self) -> bool:
        """Keep the mapping and fds open until :meth:`_unhold` (an asyncio
        wait holds the epoll fd registered with its loop); False if closed."""
        return self._gate.enter()

    def _unhold(self) -> None:
        self._gate.leave()

    # -- configuration and counters ----------------------------------------------
    @property
    def decoder(self) -> Optional[Decoder]:
        return self._reader.decoder

    @decoder.setter
    def decoder(self, dec: Optional[Decoder]) -> None:
        g = self._gate
        if g.owner == threading.get_ident():
            raise self._busy()
        with g.mutex:                  # not while another thread decodes with the old one
            self._reader.decoder = dec

    @property
    def delivered(self) -> int:
        """Records handed to the caller (per event or as batch rows)."""
        return self._reader.delivered

    @property
    def discarded(self) -> int:
        """Records the producer discarded, skipped by the reader."""
        return self._reader.discarded

    @property
    def dtype(self) -> "numpy.dtype[Any]":
        """The numpy dtype of :meth:`read_batch` rows."""
        r = self._reader
        if r.dtype is None:
            np = _np()
            if self._dtype_arg is not None:
                r.dtype = np.dtype(self._dtype_arg)
            elif r.layout is not None:
                r.dtype = r.layout.numpy_dtype()
            else:
                raise BadArgumentError(
                    f"ring buffer {self.map.name} has no record type for batches: open it "
                    "with event='struct_name' (or dtype=)")
        return r.dtype

    # -- positions ----------------------------------------------------------------------
    def pending_bytes(self) -> int:
        """Bytes written by the producer and not yet consumed."""
        self._check()
        if not self._gate.enter():
            raise ClosedError(self._what)
        try:
            return self._reader.pending_bytes()
        finally:
            self._gate.leave()

    def fileno(self) -> int:
        """An epoll fd that becomes readable when the kernel wakes consumers
        (and for good once the ring is closed)."""
        self._check()
        return self._epoll.fileno()

    def _wait(self, deadline: Optional[float]) -> bool:
        """Sleep until woken, the latency bound, or ``deadline``; False once
        the deadline has passed; ClosedError once the ring is closed."""
        wait = self.latency
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return False
        g = self._gate
        if not g.enter():
            raise ClosedError(self._what)
        try:
            self._epoll.poll(wait)
        finally:
            g.leave()
        return True

    # -- per event ----------------------------------------------------------------------
    def consume(self, callback: Optional[Callback] = None,
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
        return self._read(self._reader.consume, cb, limit)

    def poll(self, timeout: Optional[float] = None,
             callback: Optional[Callback] = None) -> int:
        """Wait up to ``timeout`` seconds (None: forever) for records, then
        deliver them to the callback; returns how many were delivered."""
        self._check()
        cb = callback or self.callback
        if cb is None:
            raise BadArgumentError("poll() needs a callback (or one given to the RingBuffer)")
        consume = partial(self._read, self._reader.consume, cb, None)
        n = consume()
        if n:
            return n
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while self._wait(deadline):
            self._check()
            n = consume()
            if n:
                return n
        return consume()

    def read(self, timeout: float = 0.0) -> List[Any]:
        """Records available now, or waiting up to ``timeout`` for the first."""
        out: List[Any] = []
        self.poll(timeout, out.append)
        return out

    def events(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """Iterate over records as they arrive, for ``timeout`` seconds in all
        (None: until the ring buffer is closed or the loop breaks).

        Each step takes the records available (waiting for the first) and
        yields them one by one; records taken but not yet yielded when the
        loop breaks go with the iterator.  A close() while the iterator waits
        ends it with ClosedError; it holds nothing between steps (see the
        class docstring on threads)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        buf: List[Any] = []
        while not self.closed:
            if deadline is None:
                left = None
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    buf.clear()
                    self._read(self._reader.consume, buf.append, None)
                    yield from buf
                    return
            buf.clear()
            self.poll(left, buf.append)
            yield from buf

    def __iter__(self) -> Iterator[Any]:
        return self.events()

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for rec in ring``: see :mod:`pytracers.aio`."""
        from ..aio import events
        return events(self)

    # -- batches ---------------------------------------------------------------------------
    def read_batch(self, max_records: Optional[int] = None, *,
                   timeout: float = 0.0) -> "numpy.ndarray":
        """The records available now (at most ``max_records``) as one numpy
        structured array of :attr:`dtype`, copied out of the ring; waits up
        to ``timeout`` seconds for the first when there are none.  An empty
        array when nothing arrived.  The array does not share the ring; for records
        of 24 bytes or more its rows are strided (``np.ascontiguousarray()``
        packs them)."""
        self._check()
        if max_records is not None and (not isinstance(max_records, int)
                                        or isinstance(max_records, bool)):
            raise BadTypeError("max_records must be an int or None")
        dt = self.dtype
        batch = partial(self._read, self._reader.read_batch, max_records, dt)
        out = batch()
        if len(out) or timeout <= 0:
            return out
        deadline = time.monotonic() + timeout
        while self._wait(deadline):
            self._check()
            out = batch()
            if len(out):
                return out
        return batch()

    def consume_views(self, callback: Callable[[Any], Any], *,
                      max_records: Optional[int] = None) -> int:
        """Zero-copy batches of the records available now: ``callback(rows)``
        for each run of records, ``rows`` a read-only numpy array of
        :attr:`dtype` that views the ring itself (no copy), in ring order.
        Returns how many records were delivered.

        ``rows`` is valid only during the call: the consumer position moves
        past them when the callback returns (or raises -- the exception then
        propagates), and the producer reuses the space.  Keep what you need
        as a copy (``rows.copy()``, ``rows["pid"].sum()``...); a callback that
        keeps the view itself, or a view derived from it, gets CallbackError
        once it returns.  Return False (or a negative int) to stop after this
        batch.  This is libbpf's ``ring_buffer__consume`` contract, one call
        per run of records instead of one per record; :meth:`read_batch` is
        the copying, always-safe form.  A close() during the callback leaves
        ``rows`` valid until it returns.
        """
        self._check()
        return self._read(self._reader.consume_views, callback, max_records, self.dtype)

    def iter_batches(self, timeout: Optional[float] = None, *,
                     max_records: Optional[int] = None) -> Iterator["numpy.ndarray"]:
        """Yield non-empty batches (see :meth:`read_batch`) as records arrive,
        for ``timeout`` seconds in all (None: until the ring buffer is closed
        or the loop breaks).  Each wait lasts at most :attr:`latency`."""
        dt = self.dtype
        batch = partial(self._read, self._reader.read_batch, max_records, dt)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            out = batch()
            if len(out):
                yield out
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return
            if not self._wait(deadline):
                out = batch()
                if len(out):
                    yield out
                return

    def __repr__(self) -> str:
        return f"<RingBuffer {self.map.name} {self.size} bytes{' closed' if self.closed else ''}>"
