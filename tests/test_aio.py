"""pytracers.aio: real tracepoint events read through asyncio on the host."""
from __future__ import annotations

import asyncio
import os
import struct

import pytest

import pytracers
import pytracers.aio as aio
from pytracers.errors import BadTypeError

EXEC = pytracers.object_path("exec")
BENCH = pytracers.object_path("bench")


def _pid_of(rec: bytes) -> int:
    return struct.unpack_from("<QI", rec)[1]


def _filename(rec: bytes) -> bytes:
    return rec[56:56 + 256].split(b"\0")[0]


def _exec_object():
    obj = pytracers.open(EXEC).load()
    obj.programs["exec_enter"].attach()
    obj.programs["exec_exit"].attach()
    return obj


async def _ticker(counter: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        counter[0] += 1
        await asyncio.sleep(0.001)


@pytest.mark.kind("tp")
def test_async_for_ring_buffer_gets_exec_events_beside_another_task():
    """`async for rec in ring` wakes on the kernel's wakeup (no thread) while a
    ticker task keeps running; the children's exec records arrive exactly."""
    async def main():
        with _exec_object() as obj:
            rb = obj.ring_buffer()
            ticks = [0]
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(ticks, stop))
            children = []
            for _ in range(3):
                p = await asyncio.create_subprocess_exec("/bin/true", "aio-test")
                await p.wait()
                children.append(p.pid)
            ticks_before = ticks[0]
            seen = {}

            async def collect():
                async for rec in rb:
                    pid = _pid_of(rec)
                    if pid in children:
                        seen[pid] = rec
                        if len(seen) == len(children):
                            return

            await asyncio.wait_for(collect(), 60.0)   # generous: slow VMs
            # the ticker ran while we waited for / read the records
            await asyncio.sleep(0.02)
            stop.set()
            await ticker
            assert ticks[0] > ticks_before
            assert sorted(seen) == sorted(children)
            for pid, rec in seen.items():
                assert _filename(rec) == b"/bin/true"
                assert rec[320:] == b"/bin/true\0aio-test\0"    # packed argv, record end
                assert struct.unpack_from("<i", rec, 48)[0] == 0     # ret
            assert obj.maps["lost"].sum_percpu_u64() == 0
    asyncio.run(main())


@pytest.mark.kind("raw_tp")
def test_raw_tp_producer_in_a_thread_async_consumer_gets_every_record():
    """bench.bpf.o's raw_tp producer fill_64, run with BPF_PROG_TEST_RUN in an
    executor thread, while the asyncio consumer reads batches: every record
    arrives once, in order."""
    n, runs = 200, 5

    async def main():
        o = pytracers.open(BENCH)
        o.only("fill_64")
        with o.load() as obj:
            rb = obj.ring_buffer()
            prog = obj.programs["fill_64"]
            loop = asyncio.get_running_loop()

            async def produce():
                for _ in range(runs):
                    res = await loop.run_in_executor(None, prog.test_run, [n, 0])
                    assert res.retval == n
                    await asyncio.sleep(0.01)

            producer = asyncio.create_task(produce())
            seqs: list = []
            async for batch in aio.batches(rb, timeout=60.0):
                seqs += [struct.unpack_from("<Q", r)[0] for r in batch]
                if len(seqs) >= n * runs:
                    break
            await producer
            assert seqs == list(range(n * runs))
            assert obj.maps["lost"].sum_percpu_u64() == 0
    asyncio.run(main())


@pytest.mark.kind("raw_tp")
def test_numpy_batches_and_async_with_object():
    """`async with` a loaded object, and batches as numpy rows (dtype from the
    event's BTF): the seq column is exactly what the producer wrote."""
    n = 300

    async def main():
        o = pytracers.open(BENCH)
        o.only("fill_64")
        async with o.load() as obj:
            rb = obj.ring_buffer(event="bench_rec64")
            loop = asyncio.get_running_loop()
            producer = loop.run_in_executor(None, obj.programs["fill_64"].test_run, [n, 0])
            seqs: list = []
            async for arr in aio.batches(rb, timeout=60.0, arrays=True, chunk=128):
                assert 1 <= len(arr) <= 128
                assert (arr["pad"] == arr["seq"][:, None]).all()
                seqs += arr["seq"].tolist()
                if len(seqs) >= n:
                    break
            assert (await producer).retval == n
            assert seqs == list(range(n))
        assert obj.closed and rb.closed
    asyncio.run(main())


@pytest.mark.kind("raw_tp")
def test_async_for_over_a_raw_tp_syscall_tracer():
    """`async with` / `async for` over a SyscallTracer on the raw sys_enter /
    sys_exit tracepoints, limited to our pid: exactly our getppid() calls
    arrive, decoded, while a ticker task keeps running."""
    from pytracers.tracers import SyscallTracer
    k = 5

    async def main():
        ticks = [0]
        stop = asyncio.Event()
        ticker = asyncio.create_task(_ticker(ticks, stop))
        async with SyscallTracer("getppid", kind="raw_tp", pid=os.getpid()) as tracer:
            assert tracer.kind == "raw_tp"
            for _ in range(k):
                os.getppid()
            seen = []

            async def collect():
                async for ev in tracer:
                    seen.append(ev)
                    if len(seen) == k:
                        return

            before = ticks[0]
            await asyncio.wait_for(collect(), 60.0)
            await asyncio.sleep(0.05)
            assert await aio.read(tracer, timeout=0.2) == []       # nothing more
            assert ticks[0] > before
            assert tracer.lost == 0
        assert tracer.closed
        stop.set()
        await ticker
        assert [ev.name for ev in seen] == ["getppid"] * k
        assert {(ev.pid, ev.ret) for ev in seen} == {(os.getpid(), os.getppid())}
        assert all(ev.latency_ns > 0 for ev in seen)
    asyncio.run(main())


@pytest.mark.kind("tp")
def test_wait_is_driven_by_the_epoll_fd_not_by_polling():
    """With a long latency bound, the wait still ends as soon as the kernel
    wakes the ring (an exec in another task), well before the bound."""
    async def main():
        with _exec_object() as obj:
            rb = obj.ring_buffer(latency=120.0)
            loop = asyncio.get_running_loop()

            async def spawn():
                await asyncio.sleep(0.05)
                p = await asyncio.create_subprocess_exec("/bin/true")
                await p.wait()
                return p.pid

            t0 = loop.time()
            spawner = asyncio.create_task(spawn())
            assert await aio.wait(rb, timeout=60.0) is True
            waited = loop.time() - t0
            pid = await spawner
            # far below the 120 s latency bound: the kernel's wakeup ended it
            assert waited < 20.0, f"woke after {waited:.2f}s: not driven by the fd"
            got: list = []
            deadline = loop.time() + 60
            while pid not in got and loop.time() < deadline:
                got += [_pid_of(r) for r in await aio.read(rb, timeout=2.0)]
            assert pid in got
            # the one-shot registration is gone: nothing left on the loop
            assert loop.remove_reader(rb.fileno()) is False
    asyncio.run(main())


@pytest.mark.kind("tp")
def test_batches_and_read_timeout():
    async def main():
        with _exec_object() as obj:
            rb = obj.ring_buffer()
            # nothing of ours yet: read() with a short timeout returns what is
            # there (possibly other processes' execs) without blocking long
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await aio.read(rb, timeout=0.05)
            assert loop.time() - t0 < 2.0
            pids = []
            for _ in range(4):
                p = await asyncio.create_subprocess_exec("/bin/true")
                await p.wait()
                pids.append(p.pid)
            seen: set = set()
            async for batch in aio.batches(rb, timeout=60.0, chunk=2):
                assert isinstance(batch, list) and 1 <= len(batch) <= 2
                seen.update(_pid_of(r) for r in batch)
                if set(pids) <= seen:
                    break
            assert set(pids) <= seen
    asyncio.run(main())


@pytest.mark.kind("tp")
def test_cancellation_detaches_and_leaves_nothing_registered():
    """Cancel a task blocked in `async for` inside `async with reader(obj)`:
    the object (links, ring, maps) is closed and the loop holds no reader.
    The no_leaks fixture checks that no fd survives."""
    async def main():
        obj = _exec_object()
        rb = obj.ring_buffer(latency=30.0)
        links = [c for c in obj._children.values() if type(c).__name__ == "Link"]
        assert len(links) == 2
        fd = rb.fileno()
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def consume():
            async with aio.reader(obj, ring=rb) as events:
                started.set()
                async for rec in events:
                    pass

        task = asyncio.create_task(consume())
        await started.wait()
        await asyncio.sleep(0.05)          # now blocked in the wait
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert obj.closed and rb.closed
        assert all(link.closed for link in links)
        assert loop.remove_reader(fd) is False
    asyncio.run(main())


def test_closing_the_ring_ends_the_iteration():
    async def main():
        with pytracers.open(EXEC).load() as obj:
            rb = obj.ring_buffer(latency=0.02)

            async def closer():
                await asyncio.sleep(0.05)
                rb.close()

            t = asyncio.create_task(closer())
            got = [r async for r in rb]
            await t
            assert got == []
    asyncio.run(main())


def test_ring_of_rejects_things_without_a_ring():
    with pytest.raises(BadTypeError):
        aio.ring_of(object())
