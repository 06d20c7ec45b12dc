"""A profile: stacks with counts, symbolised, and its outputs (folded stacks,
speedscope JSON, an interactive SVG flame graph)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ..symbolize import UNKNOWN, Frame

__all__ = ["Sample", "Profile", "ENTRY_FUNCTIONS"]

# The outermost frames of a user stack that was walked to its end: a process's
# entry, a thread's start.  A user stack ending elsewhere stopped early
# (a function built without frame pointers on the way).
ENTRY_FUNCTIONS = frozenset({"_start", "__libc_start_main", "__libc_start_call_main",
                             "start_thread", "clone", "clone3", "__clone", "__clone3",
                             "thread_start"})


class Sample(NamedTuple):
    """One distinct (process, kernel stack, user stack) and its weight."""

    pid: int
    comm: str
    kstack: Tuple[Frame, ...]      # innermost first
    ustack: Tuple[Frame, ...]      # innermost first
    count: int  # type: ignore[assignment]  # samples (profile) or microseconds (off-CPU)


def _label(f: Frame, kernel: bool) -> str:
    if f.symbol != UNKNOWN:
        return f.symbol + ("_[k]" if kernel else "")
    if f.module and not kernel:
        return f"[unknown] ({f.module.rsplit('/', 1)[-1]})"
    return UNKNOWN


class Profile:
    """The result of :func:`pytracers.profile` (or of an off-CPU run).

    ``samples``: the distinct stacks and their counts; ``total``: the sum of
    the counts; ``unit``: ``samples`` or ``microseconds``; ``stats``: what
    the kernel side dropped (``kstack_lost``, ``ustack_lost``,
    ``counts_full``), ``short_user_stacks`` (user stacks that did not reach
    a process or thread entry: frame pointers missing on the way -- weighted
    by count), ``unknown_frames`` (by reason) and ``symbolized``."""

    def __init__(self, samples: List[Sample], *, unit: str = "samples", duration: float = 0.0,
                 frequency: int = 0, event: str = "", stats: Optional[Dict[str, Any]] = None
                 ) -> None:
        self.samples = sorted(samples, key=lambda s: -s.count)
        self.unit = unit
        self.duration = duration
        self.frequency = frequency
        self.event = event
        self.stats: Dict[str, Any] = dict(stats or {})
        self.total = sum(s.count for s in self.samples)

    def __repr__(self) -> str:
        return (f"<Profile {self.total} {self.unit}, {len(self.samples)} stacks, "
                f"{self.duration:.1f} s>")

    # ---- views ---------------------------------------------------------------------------
    def stacks(self, *, kernel: bool = True, user: bool = True, comm: bool = True
               ) -> Dict[Tuple[str, ...], int]:
        """Stacks as tuples of frame labels, outermost first (comm, then user
        frames, then kernel frames with an ``_[k]`` suffix), merged, with counts."""
        out: Dict[Tuple[str, ...], int] = {}
        for s in self.samples:
            path: List[str] = [s.comm or str(s.pid)] if comm else []
            if user:
                path += [_label(f, False) for f in reversed(s.ustack)]
            if kernel:
                path += [_label(f, True) for f in reversed(s.kstack)]
            key = tuple(path)
            out[key] = out.get(key, 0) + s.count
        return out

    def top(self, n: int = 10, *, user: bool = True) -> List[Tuple[str, int]]:
        """The ``n`` leaf functions (innermost user frame, or kernel frame with
        ``user=False``) with the most weight."""
        acc: Dict[str, int] = {}
        for s in self.samples:
            frames = s.ustack if user else s.kstack
            if frames:
                name = frames[0].symbol
                acc[name] = acc.get(name, 0) + s.count
        return sorted(acc.items(), key=lambda kv: -kv[1])[:n]

    # ---- outputs ----------------------------------------------------------------------------
    def folded(self, **kw: Any) -> str:
        """Folded stacks, one line per stack: ``comm;outer;...;inner COUNT``
        (what flamegraph.pl, inferno and speedscope read)."""
        lines = [";".join(p.replace(";", ":").replace(" ", "_") if i == 0 else
                          p.replace(";", ":") for i, p in enumerate(path)) + f" {n}"
                 for path, n in sorted(self.stacks(**kw).items())]
        return "\n".join(lines) + ("\n" if lines else "")

    def speedscope(self, name: str = "pytracers profile", **kw: Any) -> str:
        """speedscope's file format (a "sampled" profile), as JSON text."""
        frames: List[Dict[str, str]] = []
        index: Dict[str, int] = {}
        samples: List[List[int]] = []
        weights: List[int] = []
        for path, n in sorted(self.stacks(**kw).items()):
            ids = []
            for p in path:
                if p not in index:
                    index[p] = len(frames)
                    frames.append({"name": p})
                ids.append(index[p])
            samples.append(ids)
            weights.append(n)
        doc = {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": frames},
            "profiles": [{"type": "sampled", "name": name,
                          "unit": "microseconds" if self.unit == "microseconds" else "none",
                          "startValue": 0, "endValue": sum(weights),
                          "samples": samples, "weights": weights}],
            "name": name, "activeProfileIndex": 0, "exporter": "pytracers",
        }
        return json.dumps(doc)

    def svg(self, title: str = "Flame graph", **kw: Any) -> str:
        """A self-contained interactive SVG flame graph (click to zoom, search)."""
        from .flamegraph import render
        sub = (f"{self.total} {self.unit}, {len(self.samples)} stacks"
               + (f", {self.event} at {self.frequency} Hz for {self.duration:.1f} s"
                  if self.frequency else ""))
        return render(self.stacks(**kw), title=title, subtitle=sub, unit=self.unit)
