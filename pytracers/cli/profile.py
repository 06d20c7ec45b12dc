"""``pytracers profile``: sample stacks on every CPU (a CPU profile);
``pytracers offcpu``: time blocked, by stack.  Written as folded stacks,
speedscope JSON or an SVG flame graph."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .loop import Stopper, need_bpf_privileges
from .options import subcommand
from .output import note

FORMATS = ("folded", "speedscope", "svg")


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--pid", type=int, help="only this process")
    p.add_argument("-c", "--comm", help="only tasks with this command name")
    p.add_argument("--cgroup", help="only tasks of this cgroup v2 (a path under /sys/fs/cgroup)")
    p.add_argument("-d", "--duration", type=float, default=10.0,
                   help="seconds to run (default 10; Ctrl-C stops early)")
    p.add_argument("--stacks", choices=("both", "kernel", "user"), default="both",
                   help="stacks to walk (default both)")
    p.add_argument("-f", "--format", choices=FORMATS, default="folded",
                   help="output format (default folded)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")


def add_command(sub: Any) -> None:
    p = subcommand(sub, "profile", "sample stacks on every CPU at a frequency (a CPU profile)")
    _shared(p)
    p.add_argument("-F", "--frequency", type=int, default=99, help="samples per second per CPU "
                   "(default 99)")
    p.add_argument("--event", default="auto", help="perf event: auto (cycles with a PMU, else "
                   "cpu-clock), cpu-clock, task-clock, cycles, instructions")
    p.set_defaults(func=cmd_profile)
    o = subcommand(sub, "offcpu", "time tasks spend blocked, by stack (from sched_switch)")
    _shared(o)
    o.add_argument("--min-us", type=int, default=1,
                   help="leave out blocks shorter than this (microseconds, default 1)")
    o.add_argument("--preempted", action="store_true",
                   help="also count time runnable after a preemption (not only blocked)")
    o.set_defaults(func=cmd_offcpu)


def write(args: argparse.Namespace, prof: Any, title: str) -> None:
    text = {"folded": prof.folded, "speedscope": lambda: prof.speedscope(name=title),
            "svg": lambda: prof.svg(title=title)}[args.format]()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def summary(prof: Any, what: str) -> None:
    st = prof.stats
    unknown = sum(st.get("unknown_frames", {}).values())
    note(f"{what}: {prof.total} {prof.unit}, {len(prof.samples)} stacks; "
         f"{st.get('short_user_stacks', 0)} with a user stack that stops before the process "
         f"entry (code without frame pointers), {unknown} of {st.get('symbolized', 0)} frames "
         f"[unknown] {st.get('unknown_frames', {})}; lost: kernel stacks "
         f"{st.get('kstack_lost', 0)}, user stacks {st.get('ustack_lost', 0)}, "
         f"counts map full {st.get('counts_full', 0)}")


def cmd_profile(args: argparse.Namespace) -> int:
    need_bpf_privileges()
    from ..profiler import Profiler
    with Stopper() as stopper:
        with Profiler(frequency=args.frequency, pid=args.pid, comm=args.comm,
                      cgroup=args.cgroup, event=args.event,
                      kernel=args.stacks != "user", user=args.stacks != "kernel") as p:
            note(f"profile: sampling {p.event} at {args.frequency} Hz on every CPU for "
                 f"{args.duration:g} s" + (f", pid {args.pid}" if args.pid else ""))
            stopper.wait(args.duration)
            prof = p.result()
    write(args, prof, f"CPU profile ({prof.event}, {args.frequency} Hz)")
    summary(prof, "profile")
    return 0


def cmd_offcpu(args: argparse.Namespace) -> int:
    need_bpf_privileges()
    from ..profiler import OffCpuProfiler
    with Stopper() as stopper:
        with OffCpuProfiler(pid=args.pid, comm=args.comm, cgroup=args.cgroup,
                            kernel=args.stacks != "user", user=args.stacks != "kernel",
                            min_us=args.min_us, preempted=args.preempted) as p:
            note(f"offcpu: blocked time from sched_switch for {args.duration:g} s"
                 + (f", pid {args.pid}" if args.pid else ""))
            stopper.wait(args.duration)
            prof = p.result()
    write(args, prof, "Off-CPU time (microseconds)")
    summary(prof, "offcpu")
    return 0
