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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .offcpu_profiler import OffCpuProfiler, offcpu
    from .result import ENTRY_FUNCTIONS, Profile, Sample
    from .sampler import Profiler, profile

# Imported on first use: ``pytracers profile`` opens its perf events without
# loading the off-CPU profiler or the result's output code.
_WHERE = {"Profile": ".result", "Sample": ".result", "ENTRY_FUNCTIONS": ".result",
          "OffCpuProfiler": ".offcpu_profiler", "offcpu": ".offcpu_profiler",
          "Profiler": ".sampler", "profile": ".sampler"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value

__all__ = ["Profile", "Sample", "Profiler", "profile", "OffCpuProfiler", "offcpu",
           "ENTRY_FUNCTIONS"]
