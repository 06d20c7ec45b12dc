"""SyscallStats: syscall counters kept in the kernel (no record per call).

Real attachments; the calls counted are the test's own, filtered by pid.
"""
from __future__ import annotations

import os

import pytest

from pytracers.errors import BadArgumentError
from pytracers.tracers.syscalls import (STAT_BUCKETS, STAT_VALUE_SIZE, SyscallStats,
                                        percentile_of, stat_bucket, stat_bucket_upper)

KINDS = [pytest.param(k, marks=pytest.mark.kind(k)) for k in ("tp", "raw_tp", "tp_btf")]


def _names(kind, *names):
    return list(names) if kind == "tp" else None      # tp needs the syscalls named


def _mine(stats, name):
    rows = [v for (pid, _nr), v in stats.snapshot().items()
            if pid == os.getpid() and v.name == name]
    assert len(rows) <= 1
    return rows[0] if rows else None


def _fail_openat(n):
    for _ in range(n):
        with pytest.raises(FileNotFoundError):
            os.open("/nonexistent/pytracers-stats", os.O_RDONLY)


@pytest.mark.parametrize("kind", KINDS)
def test_counts_errors_latency_exact(kind):
    with SyscallStats(_names(kind, "getppid", "openat"), kind=kind, pid=os.getpid()) as s:
        assert s.kind == kind and s.measure_latency
        for _ in range(37):
            os.getppid()
        _fail_openat(5)
        g = _mine(s, "getppid")
        o = _mine(s, "openat")
        assert s.dropped == 0
    assert (g.calls, g.errors) == (37, 0)
    assert o.calls >= 5 and o.errors >= 5             # Python may open files of its own
    assert g.comm and g.pid == os.getpid()
    assert sum(g.hist) == 37 and len(g.hist) == STAT_BUCKETS
    assert g.max_ns > 0 and g.total_ns >= g.max_ns
    assert 0 < g.percentile(0.5) <= g.percentile(0.99) <= g.max_ns * 1.25
    # the kernel's bucket function is the one stat_bucket computes: the
    # largest latency lies in the highest non-empty bucket
    top = max(b for b, n in enumerate(g.hist) if n)
    assert stat_bucket(g.max_ns) == top


@pytest.mark.kind("tp_btf")
def test_none_lost_however_fast_calls_come():
    """200,000 calls as fast as Python makes them, never read until the end:
    every one counted (a record-per-call tracer would need a reader that keeps
    up, or a ring that holds them all)."""
    n = 200_000
    with SyscallStats(kind="tp_btf", pid=os.getpid()) as s:
        for _ in range(n):
            os.getpgid(0)
        st = _mine(s, "getpgid")
        assert s.dropped == 0 and s.lost == 0
    assert st.calls == n and sum(st.hist) == n


@pytest.mark.kind("raw_tp")
def test_snapshots_subtract_to_an_interval():
    with SyscallStats(kind="raw_tp", pid=os.getpid()) as s:
        for _ in range(10):
            os.getppid()
        a = _mine(s, "getppid")
        for _ in range(25):
            os.getppid()
        b = _mine(s, "getppid")
    assert (a.calls, b.calls - a.calls) == (10, 25)
    delta = [y - x for x, y in zip(a.hist, b.hist)]
    assert sum(delta) == 25 and min(delta) >= 0
    assert b.max_ns >= a.max_ns and b.total_ns > a.total_ns


@pytest.mark.kind("tp")
def test_full_map_counts_what_it_could_not_count():
    """max_keys pairs present: the calls of a new pair are reported as
    dropped, exactly."""
    import numpy  # noqa: F401  -- loaded now, not (opening files) while traced
    with SyscallStats(["getppid", "openat"], kind="tp", pid=os.getpid(), max_keys=1) as s:
        os.getppid()                      # takes the only key
        first = _mine(s, "getppid")
        assert first is not None and first.calls == 1 and s.dropped == 0
        _fail_openat(7)
        assert _mine(s, "openat") is None
        assert s.dropped == 7
        os.getppid()
        assert _mine(s, "getppid").calls == 2


def test_bad_arguments():
    with pytest.raises(BadArgumentError):
        SyscallStats("getppid", max_keys=0)
    with pytest.raises(TypeError):
        SyscallStats("getppid", max_keys="8")  # type: ignore[arg-type]
    with pytest.raises(BadArgumentError, match="always measures latency"):
        SyscallStats("getppid", measure_latency=False)


@pytest.mark.kernel_independent
def test_histogram_buckets():
    """4 buckets per power of two: every value lies within its bucket, each
    bucket's upper bound is at most 25% above its lower bound, buckets
    increase with the value, and percentiles come from the upper bounds."""
    prev = -1
    for ns in list(range(0, 600)) + [2 ** k + d for k in range(10, 41) for d in (-1, 0, 1)]:
        b = stat_bucket(ns)
        assert b >= prev
        assert ns <= stat_bucket_upper(b)
        if ns >= 8 and b < STAT_BUCKETS - 1:
            assert stat_bucket_upper(b) <= ns * 1.25 + 1
        prev = b
    assert stat_bucket(2 ** 50) == STAT_BUCKETS - 1
    hist = [0] * STAT_BUCKETS
    for ns in (100, 200, 300, 40_000):
        hist[stat_bucket(ns)] += 1
    assert percentile_of(hist, 0.5) == stat_bucket_upper(stat_bucket(200))
    assert percentile_of(hist, 0.99) == stat_bucket_upper(stat_bucket(40_000))
    assert percentile_of([0] * STAT_BUCKETS, 0.5) is None


@pytest.mark.kind("tp_btf")
def test_value_layout_matches_the_object():
    with SyscallStats(kind="tp_btf", pid=os.getpid()) as s:
        layout = s.object.btf.struct_layout("sc_stat")
        assert layout.size == STAT_VALUE_SIZE
        assert layout.field("hist").size == 4 * STAT_BUCKETS
