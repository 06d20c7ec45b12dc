"""asyncio: read ring buffers and tracers with ``async for``.

    import pytracers.aio

    async with pytracers.aio.reader(tracer) as events:   # closes the tracer on exit
        async for ev in events:
            ...

    async for ev in ring_buffer:                          # RingBuffer/PerfBuffer.__aiter__
        ...

    async for batch in pytracers.aio.batches(ring_buffer):   # lists of records
        ...

    async for arr in pytracers.aio.batches(ring_buffer, arrays=True):  # numpy rows
        ...

How it works
------------
:meth:`RingBuffer.fileno() <pytracers.ringbuf.RingBuffer.fileno>` is an epoll
fd that becomes readable when the kernel wakes the ring's consumers.  While a
reader waits it registers that fd with ``loop.add_reader``; the callback only
resolves a future, and the reader then drains the ring as
``RingBuffer.consume()`` does, without waiting (not even for a thread that
is reading the ring) -- nothing here ever blocks the event loop.  The
registration is one-shot (removed as soon as the wait ends): the fd is
level-triggered, so leaving it registered while the consumer is busy in its
``async for`` body would make the loop spin.

Producers may suppress wakeups (pytracers' tracers wake the reader only past
``cfg_wakeup_bytes``), so a wait never lasts longer than the ring's
``latency`` before looking at the ring anyway -- the same bound the blocking
reader keeps.

Fairness: after each drained chunk (at most ``chunk`` records) the reader
yields to the loop with ``await asyncio.sleep(0)``, so a busy ring does not
starve the other tasks.

Cancellation and cleanup: the reader's registration is removed in a
``finally`` block, so cancelling the task (or breaking out of the loop) leaves
nothing registered with the loop.  :class:`AsyncReader` (``async with``)
closes what it was given -- a tracer, object or ring buffer, which detaches
their links and closes their fds -- when the block exits for any reason,
including cancellation.  Closing the ring buffer from elsewhere (another
task, another thread) ends an ``async for`` over it at the next look: at
once when it is waiting, since close() wakes the ring's epoll fd.

Threads and other readers: these readers share the ring's contract (see
:mod:`pytracers.ringbuf`): every record goes to exactly one reader, whether
the others are tasks on this loop or threads.  Each drain holds the ring's
reader lock only while it copies records out, never across an ``await`` or
a ``yield``, so two ``async for`` loops over one ring (or one abandoned
half-way) block nothing.  The lock is never waited for on the event loop:
when a thread is reading, the drain returns nothing and looks again a
moment later.  While a wait has the ring's fd registered with the loop, a
close() from another thread leaves the fd open until the wait has removed
it (the ring is released then), so the loop never watches a closed or
reused fd.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, List, Optional

from .errors import BadArgumentError, BadTypeError, ClosedError
from .eventbuf import EventBuffer

__all__ = ["ring_of", "wait", "read", "events", "batches", "AsyncReader", "reader"]

#: records drained per look before yielding to the loop
DEFAULT_CHUNK = 4096


def ring_of(source: Any) -> EventBuffer:
    """The event buffer behind ``source``: a :class:`RingBuffer` or a
    :class:`~pytracers.perfbuf.PerfBuffer` itself, or an object (a tracer)
    that exposes one as ``.ring_buffer``, ``.ring`` or ``.rb``."""
    if isinstance(source, EventBuffer):
        return source
    for attr in ("ring_buffer", "ring", "rb"):
        rb = getattr(source, attr, None)
        if isinstance(rb, EventBuffer):
            return rb
    raise BadTypeError(f"{type(source).__name__} has no ring buffer to read asynchronously "
                       "(pass a RingBuffer or PerfBuffer, or an object with a "
                       ".ring_buffer/.ring attribute)")


def _resolve(fut: "asyncio.Future[bool]", value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


async def wait(source: Any, timeout: Optional[float] = None) -> bool:
    """Wait until the ring has unread data, for at most ``timeout`` seconds
    (None: until there is data).  Returns True when data is pending.

    Each underlying wait is capped at the ring's ``latency`` so records
    written without a wakeup are still noticed."""
    rb = ring_of(source)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(0.0, timeout)
    while True:
        try:
            if rb.closed:
                return False
            if rb.pending_bytes() > 0:
                return True
        except ClosedError:              # closed by another thread just now
            return False
        step = rb.latency
        if deadline is not None:
            step = min(step, deadline - loop.time())
            if step <= 0:
                return False
        await _wait_once(loop, rb, step)


async def _wait_once(loop: asyncio.AbstractEventLoop, rb: EventBuffer, seconds: float) -> bool:
    """One-shot: True if the ring's fd became readable within ``seconds``.
    The ring is held open meanwhile, so its fd is not closed (nor reused)
    while the loop watches it."""
    if not rb._hold():
        return False
    try:
        fd = rb._epoll.fileno()
        fut: asyncio.Future[bool] = loop.create_future()
        loop.add_reader(fd, _resolve, fut, True)
        timer = loop.call_later(seconds, _resolve, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            loop.remove_reader(fd)
    finally:
        rb._unhold()


def _drain(rb: EventBuffer, limit: Optional[int]) -> List[Any]:
    """The records available now; none while a thread is reading (the event
    loop does not wait for it) or once the ring is closed."""
    out: List[Any] = []
    try:
        if not rb.closed:
            rb._consume_nowait(out.append, limit)
    except ClosedError:                  # closed by another thread just now
        pass
    return out


async def read(source: Any, timeout: Optional[float] = 0.0,
               limit: Optional[int] = None) -> List[Any]:
    """Records available now, or -- if there are none -- waiting up to
    ``timeout`` seconds (None: forever) for the first.  ``[]`` on timeout."""
    rb = ring_of(source)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(0.0, timeout)
    while True:
        got = _drain(rb, limit)
        if got or rb.closed:
            return got
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return got
        if await wait(rb, left):
            got = _drain(rb, limit)
            if got:
                return got
            # data pending but the first record is still being written
            await asyncio.sleep(0.0005)


async def batches(source: Any, timeout: Optional[float] = None, *,
                  chunk: int = DEFAULT_CHUNK, arrays: bool = False,
                  reader: Optional[Callable[[EventBuffer], Any]] = None) -> AsyncIterator[Any]:
    """Yield non-empty batches of records as they arrive, for ``timeout``
    seconds in all (None: until the ring closes or the loop breaks).

    A batch is a list of at most ``chunk`` records by default; with
    ``arrays=True`` it is a numpy structured array of at most ``chunk`` rows
    (:meth:`RingBuffer.read_batch`: the ring must know its event struct).
    ``reader`` replaces how a batch is read: a callable ``reader(ring) ->
    batch`` that must not block and returns something empty (``len() == 0``)
    or None when nothing is available (the ring's own reads, such as
    ``ring.read_batch()``, wait while another thread is reading it)."""
    if chunk < 1:
        raise BadArgumentError("chunk must be a positive number of records")
    rb = ring_of(source)
    if arrays:
        if reader is not None:
            raise BadArgumentError("pass arrays=True or reader=, not both")
        reader = _array_reader(chunk)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    def take() -> Any:
        if rb.closed:
            return None
        if reader is not None:
            return reader(rb)
        return _drain(rb, chunk)

    while not rb.closed:
        b = take()
        if b is not None and len(b):
            yield b
            await asyncio.sleep(0)       # let the other tasks run
            continue
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return
        if await wait(rb, left):
            b = take()
            if b is not None and len(b):
                yield b
                await asyncio.sleep(0)
            elif not rb.closed:
                await asyncio.sleep(0.0005)  # first record still being written


def _array_reader(chunk: int) -> Callable[[EventBuffer], Any]:
    def read(rb: EventBuffer) -> Any:
        try:
            return rb._read_batch_nowait(chunk)     # None while a thread is reading
        except ClosedError:                         # closed by another thread just now
            return None
    return read


async def events(source: Any, timeout: Optional[float] = None, *,
                 chunk: int = DEFAULT_CHUNK) -> AsyncIterator[Any]:
    """Yield records one at a time as they arrive, for ``timeout`` seconds in
    all (None: until the ring closes or the loop breaks)."""
    async for batch in batches(source, timeout, chunk=chunk):
        for rec in batch:
            yield rec


class AsyncReader:
    """``async with`` / ``async for`` over a tracer, object or ring buffer.

    ``source`` is what gets closed on exit when ``close`` is true (the
    default): a tracer or object detaches its links and closes its maps; a
    ring buffer closes its mapping.  ``ring`` is the ring buffer read (found
    with :func:`ring_of` unless given)."""

    def __init__(self, source: Any, *, ring: Optional[EventBuffer] = None,
                 close: bool = True, chunk: int = DEFAULT_CHUNK) -> None:
        self.source = source
        self.ring = ring if ring is not None else ring_of(source)
        self._close = close
        self.chunk = chunk

    async def __aenter__(self) -> "AsyncReader":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the source (if this reader owns it). Safe twice."""
        if self._close:
            closer = getattr(self.source, "close", None)
            if closer is not None:
                closer()
            self.ring.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return events(self.ring, chunk=self.chunk)

    def events(self, timeout: Optional[float] = None) -> AsyncIterator[Any]:
        """Records one at a time (see :func:`events`)."""
        return events(self.ring, timeout, chunk=self.chunk)

    def batches(self, timeout: Optional[float] = None, *, arrays: bool = False,
                reader: Optional[Callable[[EventBuffer], Any]] = None) -> AsyncIterator[Any]:
        """Batches of records (see :func:`batches`)."""
        return batches(self.ring, timeout, chunk=self.chunk, arrays=arrays, reader=reader)

    async def read(self, timeout: Optional[float] = 0.0) -> List[Any]:
        """Records available now, or waiting up to ``timeout`` for the first."""
        return await read(self.ring, timeout, self.chunk)

    async def wait(self, timeout: Optional[float] = None) -> bool:
        return await wait(self.ring, timeout)

    def __repr__(self) -> str:
        return f"<AsyncReader {self.ring!r}>"


def reader(source: Any, **kw: Any) -> AsyncReader:
    """``async with pytracers.aio.reader(tracer) as events: async for ev in events``."""
    return AsyncReader(source, **kw)
