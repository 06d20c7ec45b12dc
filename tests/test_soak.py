"""bench/soak's verdicts: what makes an endurance run fail.

The run itself (the agent, a tracer and a storm of execs and syscalls for
minutes) is too slow for the suite: scripts/test runs an 8-second one on the
host, and RELIABILITY.md has the 30-minute figures.  Here: the checks it
applies to its samples, on samples made up to pass or to fail each check.
"""
from __future__ import annotations

import argparse
import importlib.util
import os

import pytest

pytestmark = pytest.mark.kernel_independent

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "bench", "soak.py")
_spec = importlib.util.spec_from_file_location("soak", _PATH)
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

ARGS = argparse.Namespace(rss_limit_mb=5.0)
PRODUCED = {"execs_ok": 90, "execs_failed": 10, "getpgid": 5000}


def _rows(n=10, rss=lambda i: 50_000, fds=lambda i: 12, ids=lambda i: "prog1 map2 link3"):
    rows = []
    for i in range(n):
        for name in ("agent", "tracer"):
            rows.append({"t_s": 10.0 * i, "process": name, "rss_kb": rss(i), "fds": fds(i),
                         "progs": 1, "maps": 1, "links": 1, "object_ids": ids(i),
                         "cpu_s": 0.1 * i, "cpu_pct": 1.0})
    return rows


def _final(**over):
    m = {"events:exec": 100, "lost:exec": 0, "events:syscalls": 5000, "lost:syscalls": 0,
         "execs": 90, "exec_failures": 10, "getpgid": 5000}
    m.update(over)
    return m


TRACER = {"seen": 5000, "delivered": 5000, "lost": 0}


def check(rows, final=None, tracer=None, warmup=20.0):
    return soak._check(rows, PRODUCED, final or _final(), tracer or TRACER, warmup, ARGS, [])


def test_flat_run_passes():
    s = check(_rows())
    assert s["failures"] == []
    assert s["processes"]["agent"]["rss_max_growth_after_warmup_mb"] == 0
    assert s["accounting"]["agent getpgid"] == {"produced": 5000, "delivered": 5000, "lost": 0}


def test_rss_growth_before_warmup_is_allowed_after_is_not():
    # +20 MB during the warm-up (t < 20 s), then flat: passes
    assert check(_rows(rss=lambda i: 30_000 if i < 2 else 50_000))["failures"] == []
    # +6 MB after it: fails, naming the process
    s = check(_rows(rss=lambda i: 50_000 + (6 * 1024 if i >= 5 else 0)))
    assert s["failures"] == [
        "agent: RSS grew 6.00 MB after the warm-up (limit 5.0 MB)",
        "tracer: RSS grew 6.00 MB after the warm-up (limit 5.0 MB)"]


def test_fds_and_kernel_objects_must_stay_flat():
    s = check(_rows(fds=lambda i: 12 + (i == 7)))
    assert "agent: open fds changed: [12, 13]" in s["failures"]
    s = check(_rows(ids=lambda i: "prog1 map2 link3" + (" link4" if i == 3 else "")))
    assert "agent: BPF objects held changed: ['prog1 map2 link3', " \
           "'prog1 map2 link3 link4']" in s["failures"]


def test_every_event_produced_is_delivered_or_counted_lost():
    # lost and counted: passes
    s = check(_rows(), final=_final(**{"events:syscalls": 4990, "lost:syscalls": 10}))
    assert s["failures"] == []
    # one event neither delivered nor counted lost: fails
    s = check(_rows(), final=_final(**{"events:exec": 99}))
    assert s["failures"] == ["agent exec: produced 100 != delivered 99 + lost 0"]
    s = check(_rows(), tracer={"seen": 5001, "delivered": 5001, "lost": 0})
    assert "tracer getpgid: produced 5000 != delivered 5001 + lost 0" in s["failures"]


def test_exported_counters_match_what_was_made_when_nothing_was_lost():
    s = check(_rows(), final=_final(execs=89, exec_failures=11))
    assert s["failures"] == ["agent execs_total: 89 counted, 90 produced (nothing lost)",
                             "agent exec_failures_total: 11 counted, 10 produced (nothing lost)"]
