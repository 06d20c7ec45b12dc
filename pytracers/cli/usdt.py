"""User-space probes of the command line: ``trace usdt:TARGET:PROVIDER:NAME``,
``list usdt TARGET | --pid PID`` and ``python [BINARY] [--pid PID]``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Tuple

from ..kinds import USDT
from .loop import Stopper, TracerSource, need_bpf_privileges, run_events
from .options import Formatter, common, subcommand, tracer_options
from .output import Clock, Column, Output, dumps, hms, note, print_table, us
from .status import EPILOG, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, PROG, CliError, cli_words

USDT_COLUMNS = [
    Column("TIME", 8, hms),
    Column("PCOMM", 16, lambda d: d.get("comm")),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("PROBE", 28, lambda d: f"{d.get('provider')}:{d.get('name')}"),
    Column("ARGS", 0, lambda d: " ".join(repr(a) if isinstance(a, str) else str(a)
                                          for a in d.get("args") or ())),
]


def parse_usdt(rest: str) -> Tuple[str, str]:
    """``TARGET:PROVIDER:NAME`` (after ``usdt:``) -> (target, "provider:name")."""
    parts = rest.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise CliError(f"a USDT probe is usdt:TARGET:PROVIDER:NAME, not usdt:{rest}", EXIT_USAGE,
                       f"e.g. {PROG} trace usdt:/usr/bin/python3.11:python:gc__start; "
                       f"{PROG} list usdt TARGET shows the probes")
    return parts[0], f"{parts[1]}:{parts[2]}"


def _indexes(text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"argument indexes, e.g. 0,2; not {text!r}") from None


def add_trace_options(t: argparse.ArgumentParser) -> None:
    t.add_argument("--strings", type=_indexes, default=[], metavar="I,J",
                   help="usdt: read these arguments (0-based) as strings")


def trace_usdt_command(spec: str, args: argparse.Namespace) -> int:
    """`trace usdt:TARGET:PROVIDER:NAME`: one row per hit."""
    from ..choose import trace_usdt
    target, probe = parse_usdt(spec)
    need_bpf_privileges()
    with Stopper() as stopper:
        t = trace_usdt(target, probe, strings=getattr(args, "strings", []) or (),
                       **tracer_options(args, wakeup_bytes=64 * 1024, latency=0.1))
        src = TracerSource(t, f"{t.path}:{probe}")
        out = Output(args.json, USDT_COLUMNS)
        clock = Clock()

        def on_event(rec: Any) -> None:
            d = t.event_dict(rec)
            out.row({"event": USDT, "time": round(clock.wall(d["ts_ns"]), 6), **d})

        return run_events(src, out, stopper, args.duration, on_event, what="trace",
                          ready=f"trace: {src.target} with {src.kind}: {cli_words(t.why)}")


# ---- list usdt -------------------------------------------------------------------------------

def add_list_usdt(lsub: Any) -> None:
    lu = lsub.add_parser(USDT, help="USDT probes (.note.stapsdt) of a binary or of the files "
                         "a process mapped: provider, name, address, semaphore, argument "
                         "specs", epilog=EPILOG, formatter_class=Formatter)
    lu.add_argument("target", nargs="?", metavar="TARGET",
                    help="an executable or library (path or name: python3.11, libstdc++)")
    lu.add_argument("-p", "--pid", type=int, help="the files this process has mapped")
    common(lu, filters=False, duration=False)
    lu.set_defaults(func=cmd_list_usdt, command="list usdt")


def cmd_list_usdt(args: argparse.Namespace) -> int:
    from ..user.targets import mapped_files, resolve_binary
    from ..user.usdt import read_probes
    if args.target is None and args.pid is None:
        raise CliError("list usdt needs a TARGET or --pid PID", EXIT_USAGE,
                       f"e.g. {PROG} list usdt /usr/bin/python3.11")
    paths = [resolve_binary(args.target, args.pid)] if args.target else \
        mapped_files(args.pid, openable=True)
    rows = []
    for path in paths:
        for p in read_probes(path):
            rows.append((path, p))
    if args.json:
        for path, p in rows:
            d: Dict[str, Any] = {"binary": path, "provider": p.provider, "name": p.name,
                                 "address": p.address, "semaphore": p.semaphore_address,
                                 "args": [a.spec for a in p.args]}
            sys.stdout.write(dumps(d) + "\n")
    elif rows:
        print_table([(f"{p.provider}:{p.name}", f"{p.address:#x}",
                      f"{p.semaphore_address:#x}" if p.semaphore else "-",
                      " ".join(f"{a.type_name}@{a.location}" for a in p.args),
                      os.path.basename(path)) for path, p in rows],
                    ["PROBE", "ADDRESS", "SEMAPHORE", "ARGS", "BINARY"])
    if not rows:
        raise CliError(f"no USDT probes in {', '.join(paths) or 'the process'}", EXIT_NOT_FOUND,
                       "programs get USDT probes from <sys/sdt.h> (CPython: --with-dtrace)")
    note(f"{len(rows)} USDT probe{'s' if len(rows) != 1 else ''} in {len(paths)} file"
         f"{'s' if len(paths) != 1 else ''}")
    return EXIT_OK


# ---- python -------------------------------------------------------------------------------

PY_COLUMNS = [
    Column("TIME", 8, hms),
    Column("PID", 7, lambda d: d.get("pid"), right=True),
    Column("TID", 7, lambda d: d.get("tid"), right=True),
    Column("EVENT", 8, lambda d: d.get("what")),
    Column("DUR(us)", 9, lambda d: us(d.get("duration_ns")), right=True),
    Column("DETAIL", 0, lambda d: d.get("detail")),
]


def add_command(sub: Any) -> None:
    p = subcommand(sub, "python", "trace a CPython interpreter through its USDT probes: "
                                  "imports, garbage collections, function returns")
    p.add_argument("binary", nargs="?", metavar="BINARY",
                   help="the interpreter, every process running it (e.g. /usr/bin/python3.11); "
                        "or give --pid")
    p.add_argument("--functions", action="store_true",
                   help="also function returns (file, function, line); CPython 3.11 fires "
                        "no function__entry for inlined Python-to-Python calls")
    common(p)
    p.set_defaults(func=cmd_python)


def _py_row(d: Dict[str, Any]) -> Dict[str, Any]:
    ev = d["event"]
    if ev == "PyImport":
        return {"what": "import", "detail": f"{d['module']}"
                + ("" if d.get("found") else " (not found)")}
    if ev == "PyGC":
        return {"what": "gc", "detail": f"generation {d['generation']}, "
                                        f"{d['collected']} collected"}
    return {"what": d["phase"],
            "detail": f"{d['function']} ({d['file']}:{d['line']})"}


def cmd_python(args: argparse.Namespace) -> int:
    from ..choose import trace_python
    if args.binary is None and args.pid is None:
        raise CliError("python needs the interpreter (BINARY) or --pid PID", EXIT_USAGE,
                       f"e.g. {PROG} python /usr/bin/python3.11")
    need_bpf_privileges()
    with Stopper() as stopper:
        kw = tracer_options(args, wakeup_bytes=64 * 1024, latency=0.1)
        kw.pop("pid", None)
        t = trace_python(args.binary, pid=args.pid, functions=args.functions, **kw)
        src = TracerSource(t, t.path)
        out = Output(args.json, PY_COLUMNS)
        clock = Clock()

        def on_event(ev: Any) -> None:
            d = t.event_dict(ev)
            row = {"time": round(clock.wall(d["ts_ns"]), 6), **d}
            if not out.json:
                row.update(_py_row(d))
            out.row(row)

        return run_events(src, out, stopper, args.duration, on_event, what="python",
                          ready=f"python: {t.path} with {src.kind}: {cli_words(t.why)}")
