"""CPU profiles and off-CPU time, with flame graphs.

    prof = pytracers.profile(duration=5, frequency=99, pid=1234)
    prof.top()                      # the hottest user functions
    open("cpu.svg", "w").write(prof.svg())
    prof.folded(); prof.speedscope()

``sampler.py`` runs ``profile.bpf.o`` on a perf event per CPU; ``offcpu_profiler.py``
measures blocked time from the scheduler's switches; ``result.py`` is the
profile and its outputs; ``flamegraph.py`` writes the SVG.
"""
from __future__ import annotations

from .result import ENTRY_FUNCTIONS, Profile, Sample
from .offcpu_profiler import OffCpuProfiler, offcpu
from .sampler import Profiler, profile

__all__ = ["Profile", "Sample", "Profiler", "profile", "OffCpuProfiler", "offcpu",
           "ENTRY_FUNCTIONS"]
