"""What every event reader shares: one reader at a time, and the reading API.

:class:`EventBuffer` is the base of :class:`~pytracers.ringbuf.RingBuffer`
(``BPF_MAP_TYPE_RINGBUF``) and :class:`~pytracers.perfbuf.PerfBuffer`
(``BPF_MAP_TYPE_PERF_EVENT_ARRAY``).  A subclass maps its buffers, makes a
*parsing core* (``RingReader``, ``PerfReader``: records out of the mapping,
no locks) and an epoll fd that the kernel wakes, and hands them to
:meth:`EventBuffer._start`; everything else is here, once: the blocking and
non-blocking reads (``consume``, ``poll``, ``read``, ``events``,
``read_batch``, ``iter_batches``), waiting with a latency bound, the
threading contract (stated in :mod:`pytracers.ringbuf`, the same for every
reader) and the lifetime (``close()`` from any thread never waits for a
reader; the buffers are released when the last reader leaves).

A parsing core provides ``consume(cb, limit) -> int``, ``read_batch(max,
dtype) -> ndarray``, ``pending_bytes()``, the ``decoder``, ``layout``,
``dtype``, ``delivered`` and ``discarded`` attributes, ``stop`` (set by
close: deliver nothing more) and ``_detach()`` (drop every view of the
mapping).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from functools import partial
from typing import (TYPE_CHECKING, Any, AsyncIterator, Callable, Generator, Iterable, Iterator, List,
                    Optional, Tuple, TypeVar)

from ._resource import Resource
from .errors import BadArgumentError, BadTypeError, BusyError, CallbackError, ClosedError

if TYPE_CHECKING:
    import numpy

    from .maps import Map

__all__ = ["EventBuffer", "Decoder", "Callback", "deliver", "deliver_run", "deliver_views",
           "stop_asked"]

_T = TypeVar("_T")
Decoder = Callable[[Any, int], Any]
Callback = Callable[[Any], Any]


def _np() -> Any:
    import numpy
    return numpy


def bad_return(r: Any) -> CallbackError:
    return CallbackError(f"event-buffer callback returned {type(r).__name__}; return None or "
                         "True to go on, False or a negative int to stop")


def stop_asked(r: Any) -> bool:
    """The rule for what a read's callback returns: None, True or an int
    >= 0 go on; False or a negative int stop; anything else is an error."""
    if r is None or r is True:
        return False
    if r is False or (type(r) is int and r < 0):
        return True
    if type(r) is not int:
        raise bad_return(r)
    return False


def deliver(cb: Callable[[Any], Any], recs: Iterable[Any], count: List[int]) -> bool:
    """``cb(rec)`` for each record of one run, in order; True when a
    callback asked to stop.  ``count[0]`` is set to how many records were
    handed over -- also when a callback raises: the record it raised on
    counts as consumed, so the caller moves its position past it and the
    exception propagates without the next read delivering it again."""
    n = 0
    try:
        for rec in recs:
            n += 1
            r = cb(rec)
            if r is None or r is True:
                continue
            if stop_asked(r):
                return True
        return False
    finally:
        count[0] = n


def deliver_run(cb: Callable[[Any], Any], recs: Optional[Iterable[Any]], count: List[int],
                buf: Any = None, span: Tuple[int, int] = (0, 0), fast: Any = None) -> bool:
    """:func:`deliver` over ``recs``, or -- with ``fast``, a ``(wrap,
    iter_unpack)`` pair -- over the run of records in ``buf[span[0]:span[1]]``
    decoded in one go (``wrap(iter_unpack(view))``: no Python frame per
    record), through a memoryview released afterwards: an exported view
    would pin the mapping open."""
    if fast is None:
        assert recs is not None
        return deliver(cb, recs, count)
    view = memoryview(buf)[span[0]:span[1]]
    run = fast[0](fast[1](view))
    try:
        return deliver(cb, run, count)
    finally:
        del run                 # the iterator holds a buffer export of the view
        view.release()


def deliver_views(callback: Callable[[Any], Any], chunks: Generator[Tuple[Any, int], None, None],
                  mapping: Callable[[], Any], commit: Callable[[int, int], None]) -> Tuple[int, bool]:
    """The zero-copy read of a parsing core: ``callback(rows)`` for each
    ``(rows, pos)`` of ``chunks`` (views into the buffer; ``rows`` None for
    a last item that only moves the position), ``commit(pos, len(rows))``
    once the callback has returned or raised (see :func:`call_with_view`;
    ``mapping()`` is the numpy array of the mapping the views share).
    Returns the rows delivered and whether the callback asked to stop."""
    n = 0
    try:
        for rows, pos in chunks:
            if rows is None:
                commit(pos, 0)
                break
            k = len(rows)
            r = call_with_view(callback, rows, mapping(), partial(commit, pos, k))
            del rows
            n += k
            if stop_asked(r):
                return n, True
    finally:
        chunks.close()
    return n, False


def call_with_view(callback: Callable[[Any], Any], rows: Any, mapping: Any,
                   done: Callable[[], None]) -> Any:
    """``callback(rows)`` for a zero-copy batch, then ``done()`` (which moves
    the consumer position past the rows) even if the callback raises; its
    return value.  ``mapping`` is the numpy array of the whole mapping: when
    ``rows`` views it and the callback kept the view, or a view derived from
    it (one more reference to ``rows`` or to ``mapping`` afterwards), raises
    CallbackError once ``done()`` has run -- the producer will overwrite it."""
    view = rows.base is mapping
    before = (sys.getrefcount(rows), sys.getrefcount(mapping))
    try:
        r = callback(rows)
    finally:
        after = (sys.getrefcount(rows), sys.getrefcount(mapping))
        escaped = view and (after[0] > before[0] or after[1] > before[1])
        done()
    if escaped:
        raise CallbackError(
            "consume_views(): the callback kept a view into the buffer, which the "
            "producer will overwrite; keep a copy instead (rows.copy())")
    return r


class _Gate:
    """Who is inside an event buffer, and who releases it.

    ``mutex`` serialises the readers: it is held for one read call (moving
    records out of the buffer and running the callback) and never across a
    ``yield``, an ``await`` or a wait for records; ``owner`` is the thread
    holding it, so that a read nested in one of its callbacks is refused
    instead of deadlocking.  ``users`` counts who is inside the mapping or
    the epoll fd (a read, a blocked wait, an asyncio reader's registration).
    :meth:`close` marks the gate closing, wakes the waiters (the ``wake``
    pipe is in the epoll set) and runs the release at once when no one is
    inside; otherwise the last one out runs it -- the buffer is never unmapped
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
                os.write(self.wake, b"\0")     # ends every epoll wait on the buffer, now and later
            except OSError:  # pragma: no cover - a one-byte write to an empty pipe
                pass
            if self.users:
                self.pending = release
                return
        release()


def _close(gate: _Gate, reader: Any, release: Callable[[], None]) -> None:
    """What close() (or the collector) runs: a read in progress stops after
    its current run of records; the buffer is released once no one is inside."""
    reader.stop = True
    gate.close(release)


# Machines (os.uname().machine) whose memory model is TSO: loads are not
# reordered with loads, nor stores with earlier loads, so a reader needs no
# barrier (see pytracers.ringbuf's "Memory ordering").
TSO_MACHINES = ("x86_64",)


def ring_fence(machine: Optional[str] = None) -> Optional[Callable[[], Any]]:
    """The barrier the ring and perf-buffer readers need on this machine (or
    ``machine``): None on x86-64, libatomic's full fence elsewhere (arm64...)."""
    machine = os.uname().machine if machine is None else machine
    if machine in TSO_MACHINES:
        return None
    from ._libbpf import full_fence
    return full_fence()


def event_layout_of(btf: Any, event: Any) -> Any:
    """The layout of a reader's ``event=`` (see :mod:`pytracers.btf.foreign`),
    None for None.  A struct of the object's BTF by name -- what the shipped
    tracers pass -- is looked up without loading the foreign-layout code."""
    if event is None:
        return None
    if isinstance(event, str) and event.isidentifier():
        from .errors import BtfNotFoundError
        try:
            return btf.struct_layout(event)
        except BtfNotFoundError:
            pass                # event_layout raises it again, saying what to pass
    from .btf.foreign import event_layout
    return event_layout(btf, event)


def check_latency(latency: Any) -> float:
    if not isinstance(latency, (int, float)) or isinstance(latency, bool):
        raise BadTypeError("latency must be a number of seconds")
    if latency <= 0:
        raise BadArgumentError("latency must be a positive number of seconds")
    return float(latency)


def wake_pipe() -> Tuple[int, int]:
    """The pipe close() writes to, to end the waits on a buffer at once."""
    return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)


class EventBuffer(Resource):
    """The reading API of an event buffer (see the module docstring).

    Threads (the whole contract, and why, is in :mod:`pytracers.ringbuf`):
    any number of threads and asyncio tasks may read one buffer at once.  The
    reads are serialised -- one call at a time moves records out and runs
    its callback -- so every record is delivered exactly once, to one of
    them.  Nothing is held across a ``yield`` (:meth:`events`,
    :meth:`iter_batches`) or while waiting, so interleaved or abandoned
    iterators block no one.  A read called from inside a callback of a read
    of the same buffer raises :class:`~pytracers.errors.BusyError`.
    :meth:`close` may be called from any thread, a callback included: a
    blocked wait ends at once with ClosedError, and the buffer is unmapped
    and its fds closed when the last reader leaves it.
    """

    _what = "event buffer"
    map: "Map"
    callback: Optional[Callback]
    latency: float
    _dtype_arg: Any
    _reader: Any
    _epoll: Any
    _gate: _Gate

    def _start(self, reader: Any, epoll: Any, wake_w: int, release: Callable[[], None]) -> None:
        """Adopt the parsing core, the epoll fd and the release of everything."""
        self._reader = reader
        self._epoll = epoll
        self._gate = _Gate(wake_w)
        self._own(_close, self._gate, reader, release)

    # -- one reader at a time ----------------------------------------------------------
    def _busy(self) -> BusyError:
        return BusyError(f"{self._what} {self.map.name!r}")

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
        """``fn(*args)`` as the one reader of the buffer, after the thread
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
        return int(self._reader.delivered)

    @property
    def discarded(self) -> int:
        """Records the producer discarded, skipped by the reader."""
        return int(self._reader.discarded)

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
                    f"{self._what} {self.map.name} has no record type for batches: open it "
                    "with event='struct_name' (or dtype=)")
        return r.dtype

    # -- positions ----------------------------------------------------------------------
    def pending_bytes(self) -> int:
        """Bytes written by the producer and not yet consumed."""
        self._check()
        if not self._gate.enter():
            raise ClosedError(self._what)
        try:
            return int(self._reader.pending_bytes())
        finally:
            self._gate.leave()

    def fileno(self) -> int:
        """An epoll fd that becomes readable when the kernel wakes consumers
        (and for good once the buffer is closed)."""
        self._check()
        return int(self._epoll.fileno())

    def _wait(self, deadline: Optional[float]) -> bool:
        """Sleep until woken, the latency bound, or ``deadline``; False once
        the deadline has passed; ClosedError once the buffer is closed."""
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
            raise BadArgumentError(f"consume() needs a callback (or one given to the "
                                   f"{type(self).__name__})")
        return self._read(self._reader.consume, cb, limit)

    def poll(self, timeout: Optional[float] = None,
             callback: Optional[Callback] = None) -> int:
        """Wait up to ``timeout`` seconds (None: forever) for records, then
        deliver them to the callback; returns how many were delivered."""
        self._check()
        cb = callback or self.callback
        if cb is None:
            raise BadArgumentError(f"poll() needs a callback (or one given to the "
                                   f"{type(self).__name__})")
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
        (None: until the buffer is closed or the loop breaks).

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
        """``async for rec in buffer``: see :mod:`pytracers.aio`."""
        from .aio import events
        return events(self)

    # -- batches ---------------------------------------------------------------------------
    def read_batch(self, max_records: Optional[int] = None, *,
                   timeout: float = 0.0) -> "numpy.ndarray":
        """The records available now (at most ``max_records``) as one numpy
        structured array of :attr:`dtype`, copied out of the buffer; waits
        up to ``timeout`` seconds for the first when there are none.  An
        empty array when nothing arrived.  The array does not share the
        buffer; its rows may be strided (``np.ascontiguousarray()`` packs
        them)."""
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
        :attr:`dtype` that views the buffer itself (no copy), in buffer order.
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
        for ``timeout`` seconds in all (None: until the buffer is closed
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
