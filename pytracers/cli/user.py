"""The command line's user-space function parts: ``pytracers trace
uprobe:TARGET:SYMBOL`` / ``uretprobe:...`` (with ``--pid``) and ``pytracers
list symbols TARGET [GLOB]``."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..kinds import UPROBE
from .options import Formatter, common
from .output import dumps, note, print_table
from .status import EPILOG, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, PROG, CliError

# How often the trace loop looks at the traced process and file (seconds).
WATCH_EVERY = 0.2


def split_user_target(kind: str, spec: str) -> Tuple[str, str]:
    """``TARGET:SYMBOL`` after a uprobe/uretprobe prefix -> (target, symbol)."""
    target, sep, symbol = spec.rpartition(":")
    if not sep or not target or not symbol:
        raise CliError(f"a {kind} target is TARGET:SYMBOL, got {spec!r}", EXIT_USAGE,
                       f"e.g. {PROG} trace {kind}:libc:malloc --pid PID, or "
                       f"{kind}:/usr/bin/python3.11:0x1f2e0 (a file offset)")
    return target, symbol


def open_user_trace(kind: str, target: str, symbol: str, kw: Dict[str, Any],
                    string_arg: Optional[str] = None) -> Any:
    """The tracer for ``uprobe:``/``uretprobe:`` (both: arguments, return value,
    latency); ``string_arg``: an argument's name or index, read as a string."""
    from ..choose import trace_user_function
    from ..program import parse_symbol_or_offset
    kw = {k: v for k, v in kw.items() if k not in ("measure_latency",)}
    if string_arg is not None:
        kw["string_arg"] = int(string_arg) if string_arg.isdigit() else string_arg
    return trace_user_function(target, parse_symbol_or_offset(symbol), kind=kind, **kw)


def watcher(tracer: Any, stop: Callable[[str], None]) -> Tuple[float, Callable[[], None]]:
    """A tick for the event loop: stop when the traced process exits; say once
    when the traced file is replaced on disk (the probes stay on the old one)."""
    said = [False]

    def tick() -> None:
        if getattr(tracer, "process_exited", False):
            stop(f"process {tracer.attach_pid} exited")
        if not said[0] and getattr(tracer, "replaced_on_disk", False):
            said[0] = True
            note(f"trace: {tracer.binary} was replaced on disk: the probes stay on the old "
                 "file (processes started before); run the command again to trace the new one")
    return WATCH_EVERY, tick


# ---- list symbols -----------------------------------------------------------------------

def add_list_command(lsub: Any) -> None:
    ls = lsub.add_parser("symbols", help="functions of a user-space binary or library (ELF "
                         ".symtab/.dynsym) matching a glob, with the offsets uprobes use",
                         epilog=EPILOG, formatter_class=Formatter)
    ls.add_argument("target", metavar="TARGET",
                    help="a path, a library name (libc) or a command (python3.11); with "
                         "--pid, the file that process mapped")
    ls.add_argument("glob", nargs="?", default="*", metavar="GLOB",
                    help="shell-style pattern on the function name (default: *)")
    ls.add_argument("-p", "--pid", type=int, help="resolve TARGET through this process's maps")
    common(ls, filters=False, duration=False)
    ls.set_defaults(func=cmd_list_symbols, command="list symbols")


def cmd_list_symbols(args: argparse.Namespace) -> int:
    from ..user.symbols import symbol_table
    from ..user.targets import resolve_binary
    path = resolve_binary(args.target, args.pid)
    table = symbol_table(path)
    syms = table.find(args.glob)
    if not syms:
        stem = args.glob.strip("*?[]")
        import difflib
        sugg = difflib.get_close_matches(stem, list(table.functions), n=5, cutoff=0.6)
        raise CliError(f"no function of {path} matches {args.glob!r}"
                       + (f"; did you mean: {', '.join(sugg)}?" if sugg else "")
                       + ("" if table.has_symtab else " (the binary is stripped: only its "
                          "exported functions are listed)"), EXIT_NOT_FOUND,
                       f"globs are shell-style: {PROG} list symbols {args.target} '*{stem}*'")
    rows: List[Dict[str, Any]] = []
    for s in syms:
        notes = [n for n, on in (("ifunc", s.ifunc), ("static", s.local)) if on]
        rows.append({"name": s.name, "version": s.version, "default": s.default,
                     "address": s.address, "offset": s.offset, "size": s.size,
                     "table": s.table, "notes": notes})
    if args.json:
        for r in rows:
            sys.stdout.write(dumps({"binary": path, **r}) + "\n")
    else:
        print_table([(s.versioned_name, f"{s.address:#x}", f"{s.offset:#x}", s.size,
                      s.table, ",".join(r["notes"])) for s, r in zip(syms, rows)],
                    ["FUNCTION", "ADDRESS", "OFFSET", "SIZE", "TABLE", "NOTE"])
    what = "" if table.has_symtab else " (stripped: .dynsym only)"
    note(f"{len(rows)} function{'s' if len(rows) != 1 else ''} of {path}{what} match "
         f"{args.glob!r}; trace one with: {PROG} trace {UPROBE}:{args.target}:NAME")
    return EXIT_OK

