"""Off-CPU time: where tasks block, and for how long (``offcpu.bpf.o`` on
``tp_btf/sched_switch``, durations summed in the kernel per process and
stacks).  The profile's unit is microseconds."""
from __future__ import annotations

import time
from typing import Optional

from .. import object as _object
from .._shipped import object_path
from ..errors import BadArgumentError
from .result import Profile
from .sampler import StackCounter, configure, configure_watch

__all__ = ["OffCpuProfiler", "offcpu"]

NS_PER_US = 1000


class OffCpuProfiler(StackCounter):
    """Blocked time by stack while running (``with OffCpuProfiler() as p: ...;
    p.result()``).  ``min_us``: blocks shorter than this are left out;
    ``preempted``: also count time spent runnable after a preemption;
    ``watch_processes``: read each process's mappings when it first adds a
    count (and after an exec), so that short-lived ones still symbolise (as
    :class:`~pytracers.profiler.Profiler` does)."""

    ST_NAMES = ("blocks", "kstack_lost", "ustack_lost", "counts_full")

    def __init__(self, *, pid: Optional[int] = None, comm: Optional[str] = None,
                 cgroup: Optional[str] = None, kernel: bool = True, user: bool = True,
                 min_us: int = 1, preempted: bool = False,
                 watch_processes: bool = True) -> None:
        if not isinstance(min_us, int) or min_us < 0:
            raise BadArgumentError(f"min_us must be a non-negative int, got {min_us!r}")
        o = _object.open(object_path("offcpu"))
        try:
            configure(o, pid=pid, comm=comm, cgroup=cgroup, kernel=kernel, user=user)
            o.config["cfg_min_ns"] = min_us * NS_PER_US
            o.config["cfg_preempted"] = int(preempted)
            watch = bool(user and watch_processes)
            configure_watch(o, watch)
            self.obj = o.load()
        except BaseException:
            o.close()
            raise
        try:
            self.links = self.obj.programs["offcpu_switch"].attach()
        except BaseException:
            self.obj.close()
            raise
        self._running(watch)

    def result(self) -> Profile:
        samples, stats, duration = self._counts(NS_PER_US)
        return Profile(samples, unit="microseconds", duration=duration,
                       event="sched_switch", stats=stats)


def offcpu(duration: float = 10.0, pid: Optional[int] = None, *, comm: Optional[str] = None,
           cgroup: Optional[str] = None, kernel: bool = True, user: bool = True,
           min_us: int = 1, preempted: bool = False) -> Profile:
    """Blocked time by stack for ``duration`` seconds (see :class:`OffCpuProfiler`)."""
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise BadArgumentError(f"duration must be a positive number of seconds, got {duration!r}")
    with OffCpuProfiler(pid=pid, comm=comm, cgroup=cgroup, kernel=kernel, user=user,
                        min_us=min_us, preempted=preempted) as p:
        time.sleep(duration)
        return p.result()
