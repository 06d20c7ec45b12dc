"""The ring readers' threading contract (pytracers.ringbuf, "Threads"), on
real kernel attachments.

Reads of one ring are serialised call by call, so every record reaches
exactly one reader, whatever mix of threads, iterators and asyncio tasks
reads it; nothing is held across a ``yield`` or an ``await``, so interleaved
and abandoned iterators block no one; a read nested in a callback of a read
of the same ring raises BusyError; close() from any thread ends a blocked
reader at once and releases the ring when the last reader leaves it.

The events are this process's own getppid() calls, traced by a SyscallTracer
(tp kind) limited to our pid: each call makes exactly one record, written
before the call returns, with a distinct ``ts_ns`` -- so counts are exact and
a duplicate shows as a repeated timestamp.  The rings are 1 MiB, room for
every record a test makes (``lost`` is checked).
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Callable, List

import pytest

import pytracers.aio as aio
from pytracers.errors import BusyError, ClosedError
from pytracers.tracers import SyscallTracer

pytestmark = pytest.mark.kind("tp")

RING = 1 << 20
LONG = 60.0            # upper bound for anything that should happen "soon" (slow VMs)


def _tracer(**kw: Any) -> SyscallTracer:
    return SyscallTracer("getppid", kind="tp", pid=os.getpid(), ring_size=RING, **kw)


def _calls(n: int) -> None:
    for _ in range(n):
        os.getppid()


def _fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def _until(cond: Callable[[], bool], what: str, timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


def _read_exactly(t: SyscallTracer, n: int) -> List[int]:
    """The timestamps of the next ``n`` records (read() until there are n),
    then checks that nothing more arrives."""
    out: List[int] = []
    deadline = time.monotonic() + LONG
    while len(out) < n and time.monotonic() < deadline:
        out += [ev.ts_ns for ev in t.read(timeout=0.5)]
    out += [ev.ts_ns for ev in t.read(timeout=0.3)]
    assert len(out) == n, f"read {len(out)} records, expected {n}"
    return out


class Readers:
    """Reader threads running ``body(i, got)`` until stopped; whatever a body
    raises is kept and re-raised by :meth:`stop`."""

    def __init__(self, bodies: List[Callable[[threading.Event, List[int]], None]]) -> None:
        self.halt = threading.Event()
        self.got: List[List[int]] = [[] for _ in bodies]
        self.errors: List[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(b, g), daemon=True)
                        for b, g in zip(bodies, self.got)]
        for th in self.threads:
            th.start()

    def _run(self, body: Callable[[threading.Event, List[int]], None], got: List[int]) -> None:
        try:
            body(self.halt, got)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            self.errors.append(e)

    def total(self) -> int:
        return sum(len(g) for g in self.got)

    def stop(self) -> None:
        self.halt.set()
        for th in self.threads:
            th.join(LONG)
            assert not th.is_alive(), "a reader thread did not stop"
        if self.errors:
            raise self.errors[0]


def _collect_all(readers: Readers, n: int) -> List[int]:
    """Wait until the readers hold ``n`` records in all, leave time for a
    duplicate to show up, stop them; every record is there exactly once."""
    _until(lambda: readers.total() >= n, f"the readers got {n} records")
    time.sleep(0.5)
    readers.stop()
    every = [ts for g in readers.got for ts in g]
    assert len(every) == n, [len(g) for g in readers.got]
    assert len(set(every)) == n, "a record was delivered twice"
    for g in readers.got:
        assert g == sorted(g), "a reader saw its share out of ring order"
    return every


# ---- two readers: every record exactly once ----------------------------------------------------

def test_two_threads_iterating_events_get_every_record_exactly_once():
    """Two threads iterate one tracer's events() while this thread makes 2,000
    getppid() calls: together they receive 2,000 records, each once (before
    the reader was serialised, each thread received all 2,000)."""
    n = 2000

    def by_events(halt: threading.Event, got: List[int]) -> None:
        while not halt.is_set():
            for ev in t.events(timeout=0.2):
                got.append(ev.ts_ns)

    with _tracer() as t:
        readers = Readers([by_events, by_events])
        _calls(n)
        _collect_all(readers, n)
        assert t.delivered == n
        assert t.lost == 0


def test_threads_mixing_every_kind_of_read_share_the_records_exactly_once():
    """events(), poll() with a callback, read() and numpy read_batch() in four
    threads at once, while the records arrive in bursts: each record is
    delivered once, as an event or as a batch row."""
    n = 3000

    def by_events(halt: threading.Event, got: List[int]) -> None:
        while not halt.is_set():
            got.extend(ev.ts_ns for ev in t.events(timeout=0.1))

    def by_poll(halt: threading.Event, got: List[int]) -> None:
        while not halt.is_set():
            t.poll(0.1, lambda ev: got.append(ev.ts_ns))

    def by_read(halt: threading.Event, got: List[int]) -> None:
        while not halt.is_set():
            got.extend(ev.ts_ns for ev in t.read(timeout=0.1))

    def by_batch(halt: threading.Event, got: List[int]) -> None:
        while not halt.is_set():
            got.extend(t.ring.read_batch(64, timeout=0.1)["ts_ns"].tolist())

    with _tracer() as t:
        readers = Readers([by_events, by_poll, by_read, by_batch])
        for _ in range(n // 500):
            _calls(500)
            time.sleep(0.05)
        _collect_all(readers, n)
        assert t.delivered == n
        assert t.lost == 0


def test_a_suspended_events_step_does_not_hold_the_ring():
    """An events() iterator that took a batch and is suspended between two
    records holds nothing: another thread reads what arrives next, and the
    iterator still yields the rest of its own batch -- no record twice."""
    with _tracer() as t:
        _calls(500)
        it = t.events()
        mine = [next(it).ts_ns]               # this step took all 500 from the ring
        _calls(300)
        other: List[int] = []
        th = threading.Thread(target=lambda: other.extend(_read_exactly(t, 300)))
        th.start()
        th.join(LONG)
        assert not th.is_alive()
        mine += [next(it).ts_ns for _ in range(499)]
        it.close()
        assert len(other) == 300
        assert len(set(mine) | set(other)) == 800
        assert max(mine) < min(other)
        assert t.read(timeout=0.2) == []


def test_one_thread_interleaving_two_iterators_neither_deadlocks_nor_duplicates():
    """The case a lock held across ``yield`` would deadlock: one thread
    alternates between two events() iterators over one tracer."""
    with _tracer() as t:
        a = t.events(timeout=LONG)
        b = t.events(timeout=LONG)
        _calls(10)
        got_a = [next(a).ts_ns]               # a takes the 10 available
        _calls(10)
        got_b = [next(b).ts_ns]               # b is not blocked by a: it takes the next 10
        for _ in range(9):
            got_a.append(next(a).ts_ns)
            got_b.append(next(b).ts_ns)
        a.close()
        b.close()
        assert len(set(got_a) | set(got_b)) == 20
        assert max(got_a) < min(got_b)


def test_an_abandoned_events_generator_blocks_no_later_reader():
    """A generator left suspended (kept, never resumed, never closed) and one
    dropped half-way: later readers in this thread and in another get every
    new record."""
    with _tracer() as t:
        _calls(3)
        kept = t.events()
        first = next(kept).ts_ns               # suspended mid-batch, kept alive
        _calls(5)
        assert len(_read_exactly(t, 5)) == 5  # same thread
        _calls(4)
        other: List[int] = []
        th = threading.Thread(target=lambda: other.extend(_read_exactly(t, 4)))
        th.start()
        th.join(LONG)
        assert len(other) == 4 and min(other) > first
        dropped = t.events()
        _calls(2)
        next(dropped)
        del dropped                            # abandoned with a record still in its batch
        _calls(6)
        assert len(_read_exactly(t, 6)) == 6
        kept.close()


def test_a_read_inside_a_callback_of_the_same_ring_raises_busy_error():
    """read() called from a poll() callback on the same tracer (same thread)
    raises BusyError at once, naming what to do; the record being delivered
    counts as consumed and the ring goes on working."""
    with _tracer() as t:
        _calls(3)
        seen: List[int] = []

        def cb(ev: Any) -> None:
            seen.append(ev.ts_ns)
            t.read()

        with pytest.raises(BusyError, match="return from the callback first"):
            t.poll(LONG, cb)
        assert len(seen) == 1
        rest = _read_exactly(t, 2)
        assert min(rest) > seen[0]
        _calls(2)
        with pytest.raises(BusyError):         # the batch readers too
            t.ring.consume_views(lambda rows: t.ring.read_batch())


# ---- close() from another thread -------------------------------------------------------------

def test_close_from_another_thread_ends_a_blocked_events_loop_at_once():
    """A thread blocked in events() on a ring whose latency bound is 60 s:
    close() from this thread ends its loop with ClosedError well before the
    bound (close wakes the wait), and every fd is back to what it was."""
    before = _fds()
    t = _tracer(latency=LONG)
    outcome: List[Any] = []

    def reader() -> None:
        try:
            for _ in t.events():
                pass
            outcome.append("ended without ClosedError")
        except BaseException as e:  # noqa: BLE001 - checked below
            outcome.append(e)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    # inside its epoll wait: the ring counts it as a user
    _until(lambda: t.ring._gate.users == 1, "the reader waits on the ring")
    t0 = time.monotonic()
    t.close()
    th.join(LONG)
    took = time.monotonic() - t0
    assert not th.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ClosedError), outcome
    assert took < LONG / 6, f"the reader ended {took:.1f}s after close(): not woken by it"
    assert _fds() == before


def test_close_from_another_thread_during_a_callback_waits_for_nothing_and_unmaps_after():
    """close() while another thread's poll() callback is running returns
    without waiting for it; the ring stays mapped until the callback returns
    (no use after unmap), the read stops after the run it was delivering,
    and the next read raises ClosedError; then every fd is released."""
    before = _fds()
    t = _tracer()
    _calls(20)
    in_callback = threading.Event()
    go_on = threading.Event()
    seen: List[int] = []
    result: List[Any] = []

    def cb(ev: Any) -> None:
        seen.append(ev.ts_ns)
        if len(seen) == 1:
            in_callback.set()
            go_on.wait(LONG)

    def reader() -> None:
        try:
            result.append(t.ring.poll(LONG, cb))
            t.ring.poll(LONG, cb)
        except BaseException as e:  # noqa: BLE001 - checked below
            result.append(e)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    assert in_callback.wait(LONG)
    t.close()                                  # returns while the callback still runs
    assert t.closed and t.ring.closed
    assert th.is_alive()
    assert _fds() - before, "the ring was released under a running reader"
    go_on.set()
    th.join(LONG)
    assert not th.is_alive()
    assert result[0] == len(seen) and 1 <= len(seen) <= 20
    assert isinstance(result[1], ClosedError), result
    assert _fds() == before


def test_close_inside_the_readers_own_callback():
    """A callback that closes its own tracer: the read returns normally after
    that record (it used to fail on the released mapping), later reads raise
    ClosedError, and nothing leaks."""
    before = _fds()
    t = _tracer()
    _calls(5)
    seen: List[Any] = []

    def cb(ev: Any) -> None:
        seen.append(ev)
        t.close()

    assert t.ring.poll(LONG, cb) == len(seen) >= 1
    with pytest.raises(ClosedError):
        t.ring.read()
    assert _fds() == before


# ---- asyncio readers share the contract -----------------------------------------------------

def test_an_asyncio_reader_and_a_thread_share_the_records_exactly_once():
    """``async for`` over a tracer on the event loop and poll() in a thread,
    at once: each record reaches exactly one of them."""
    n = 2000

    def by_poll(halt: threading.Event, got: List[int]) -> None:
        while not halt.is_set():
            t.poll(0.1, lambda ev: got.append(ev.ts_ns))

    async def main() -> List[int]:
        mine: List[int] = []

        async def consume() -> None:
            async for ev in aio.events(t):
                mine.append(ev.ts_ns)

        task = asyncio.create_task(consume())
        for _ in range(n // 500):
            _calls(500)
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LONG
        while len(mine) + readers.total() < n and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return mine

    with _tracer() as t:
        readers = Readers([by_poll])
        mine = asyncio.run(main())
        readers.stop()
        every = mine + readers.got[0]
        assert len(every) == n, (len(mine), len(readers.got[0]))
        assert len(set(every)) == n
        assert t.delivered == n and t.lost == 0


def test_two_async_loops_interleave_and_an_abandoned_one_blocks_nothing():
    """Two ``async for`` loops over one tracer on one event loop share its
    records; an async generator left suspended after its first record does
    not keep a later aio.read() from getting new ones."""
    async def main(t: SyscallTracer) -> None:
        got: List[List[int]] = [[], []]

        async def consume(i: int) -> None:
            async for batch in aio.batches(t, chunk=7):
                got[i].extend(ev.ts_ns for ev in batch)
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(consume(i)) for i in range(2)]
        for _ in range(10):
            _calls(50)
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LONG
        while len(got[0]) + len(got[1]) < 500 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        every = got[0] + got[1]
        assert len(every) == 500 and len(set(every)) == 500

        _calls(3)
        left = aio.events(t)
        first = (await left.__anext__()).ts_ns     # suspended, never resumed
        _calls(4)
        new: List[int] = []
        deadline = loop.time() + LONG
        while len(new) < 4 and loop.time() < deadline:
            new += [ev.ts_ns for ev in await aio.read(t, timeout=1.0)]
        assert len(new) == 4 and min(new) > first
        await left.aclose()

    with _tracer() as t:
        asyncio.run(main(t))
        assert t.lost == 0


def test_close_from_another_thread_ends_an_async_for_at_once():
    """An ``async for`` waiting on a ring whose latency bound is 60 s ends
    soon after another thread closes the tracer (close wakes the ring's fd;
    the fd stays open until the loop has stopped watching it), and every fd
    is back to what it was."""
    before = _fds()
    t = _tracer(latency=LONG)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        got: List[Any] = []
        waiting = asyncio.Event()

        async def consume() -> None:
            waiting.set()
            async for ev in aio.events(t):
                got.append(ev)

        task = asyncio.create_task(consume())
        await waiting.wait()
        while t.ring._gate.users == 0:             # registered with the loop, waiting
            await asyncio.sleep(0.01)
        t0 = loop.time()
        closer = threading.Thread(target=t.close)
        closer.start()
        await asyncio.wait_for(task, LONG)         # ends normally, as a closed ring does
        took = loop.time() - t0
        closer.join(LONG)
        assert got == []
        return took

    took = asyncio.run(main())
    assert took < LONG / 6, f"the async for ended {took:.1f}s after close(): not woken by it"
    assert _fds() == before
