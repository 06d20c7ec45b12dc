"""Off-CPU time: where tasks block, and for how long (``offcpu.bpf.o`` on
``tp_btf/sched_switch``, durations summed in the kernel per process and
stacks).  The profile's unit is microseconds."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from .. import object as _object
from .._shipped import object_path
from ..errors import BadArgumentError
from .result import Profile
from .sampler import configure, read_counts

__all__ = ["OffCpuProfiler", "offcpu"]

ST_NAMES = ("blocks", "kstack_lost", "ustack_lost", "counts_full")
NS_PER_US = 1000


class OffCpuProfiler:
    """Blocked time by stack while running (``with OffCpuProfiler() as p: ...;
    p.result()``).  ``min_us``: blocks shorter than this are left out;
    ``preempted``: also count time spent runnable after a preemption."""

    def __init__(self, *, pid: Optional[int] = None, comm: Optional[str] = None,
                 cgroup: Optional[str] = None, kernel: bool = True, user: bool = True,
                 min_us: int = 1, preempted: bool = False) -> None:
        if not isinstance(min_us, int) or min_us < 0:
            raise BadArgumentError(f"min_us must be a non-negative int, got {min_us!r}")
        o = _object.open(object_path("offcpu"))
        try:
            configure(o, pid=pid, comm=comm, cgroup=cgroup, kernel=kernel, user=user)
            o.config["cfg_min_ns"] = min_us * NS_PER_US
            o.config["cfg_preempted"] = int(preempted)
            self.obj = o.load()
        except BaseException:
            o.close()
            raise
        try:
            self.link = self.obj.programs["offcpu_switch"].attach()
        except BaseException:
            self.obj.close()
            raise
        self.started = time.monotonic()
        self.stopped: Optional[float] = None

    def stop(self) -> None:
        if self.stopped is None:
            self.link.close()
            self.stopped = time.monotonic()

    def stats(self) -> Dict[str, int]:
        m = self.obj.maps["stats"]
        return {name: m.sum_percpu_u64(i) for i, name in enumerate(ST_NAMES)}

    def result(self) -> Profile:
        self.stop()
        samples, stats = read_counts(self.obj, self.stats(), scale=NS_PER_US)
        end = self.stopped if self.stopped is not None else time.monotonic()
        return Profile(samples, unit="microseconds", duration=end - self.started,
                       event="sched_switch", stats=stats)

    def close(self) -> None:
        self.stop()
        self.obj.close()

    def __enter__(self) -> "OffCpuProfiler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
