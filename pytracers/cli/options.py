"""The command line's vocabulary: the probe kinds a user may name, the
options every command shares, and argument parsing with one-line errors."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NoReturn, Sequence, Tuple

from ..kinds import (FENTRY, FEXIT, KPROBE, KPROBE_MULTI, KRETPROBE, RAW_TP, TP, TP_BTF, UPROBE,
                     URETPROBE)
from .status import EPILOG, EXIT_USAGE, PROG, CliError

# The kinds a user may name, in `--kind K` or `trace K:TARGET`: the one list
# of KIND: prefixes of the command line.
FUNCTION_KINDS = (FENTRY, FEXIT, KPROBE, KRETPROBE, KPROBE_MULTI)
SYSCALL_KINDS = (TP, RAW_TP, TP_BTF)
ALL_KINDS = SYSCALL_KINDS + FUNCTION_KINDS
EXEC_KINDS = (TP, TP_BTF)                  # exec: the execve tracepoints, or the process tracer
LIST_FUNCTION_KINDS = (FENTRY, KPROBE)     # list functions: can this kind attach?
USER_KINDS = (UPROBE, URETPROBE)           # trace uprobe:TARGET:SYMBOL (user-space functions)


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size()`` finds it
    (``COLUMNS``, then standard output's terminal, else 80)."""
    try:
        cols = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        cols = 0
    if cols <= 0:
        out = sys.__stdout__
        try:
            cols = os.get_terminal_size(out.fileno()).columns if out is not None else 0
        except (AttributeError, ValueError, OSError):
            cols = 0
    return cols if cols > 0 else 80


class Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter (descriptions kept as written) measuring the
    terminal itself: argparse makes a formatter at every ``add_argument``,
    and its own imports ``shutil`` for the width, with ``bz2`` and ``lzma``
    (~3 ms of every start)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Any = None) -> None:
        if width is None:
            width = _columns() - 2          # what argparse subtracts
        super().__init__(prog, indent_increment, max_help_position, width)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (hint: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def subcommand(sub: Any, name: str, help_: str) -> argparse.ArgumentParser:
    """A command's parser: its help sentence as description, the exit statuses as epilog."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_, description=help_[0].upper() + help_[1:] + ".", epilog=EPILOG,
        formatter_class=Formatter)
    return p


def common(p: argparse.ArgumentParser, *, kinds: Sequence[str] = (),
           filters: bool = True, duration: bool = True, json_lines: bool = True) -> None:
    """The options group commands share: -p/-c filters, -d, --json, -k, --debug."""
    g = p.add_argument_group("common options")
    if filters:
        g.add_argument("-p", "--pid", type=_pid, help="only this process (thread group) id")
        g.add_argument("-c", "--comm", type=_comm,
                       help="only processes with this command name (15 bytes at most)")
    if duration:
        g.add_argument("-d", "--duration", type=_seconds, metavar="SECONDS",
                       help="stop after this many seconds (default: until Ctrl-C/SIGTERM)")
    if json_lines:
        g.add_argument("--json", action="store_true",
                       help="JSON lines on stdout (one per event/row), nothing else on stdout")
    if kinds:
        g.add_argument("-k", "--kind", choices=list(kinds),
                       help="the probe kind to use instead of the automatic choice")
    g.add_argument("--debug", action="store_true",
                   help="log what pytracers does and show tracebacks on errors")


def split_names(text: str) -> List[str]:
    """Syscall names, comma-separated: "openat,read" -> ["openat", "read"]."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError("no syscall named", EXIT_USAGE, f"e.g. {PROG} trace syscall:openat")
    return names


def tracer_options(args: argparse.Namespace, **extra: Any) -> Dict[str, Any]:
    """The tracer keyword arguments the common options ask for (pid=, comm=)."""
    kw: Dict[str, Any] = dict(extra)
    if getattr(args, "pid", None):
        kw["pid"] = args.pid
    if getattr(args, "comm", None):
        kw["comm"] = args.comm
    return kw


# ---- argument types --------------------------------------------------------------------
# (argparse names a type function in some errors: "invalid _comm value"; the
# names are those the command line has always printed.)

def _comm(value: str) -> str:
    raw = value.encode()
    if not raw:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(raw) > 15:
        # The kernel keeps only the first 15 bytes of a command name.
        return raw[:15].decode("utf-8", "ignore")
    return value


def _pid(value: str) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {value!r}") from None
    if not 0 < n < 1 << 32:
        raise argparse.ArgumentTypeError(f"not a process id: {value!r}")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not s > 0 or s != s or s == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {value!r}")
    return s


def _listen(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or "0.0.0.0", int(port))
