"""Errors -> one line with a hint, and an exit status per class.

Every command raises; :func:`report_error` (called by ``main``) turns the
exception into the one line on stderr and the status.  :class:`CliError` is
for what only the command line can say (a contradictory target, a list that
matched nothing); library errors are classified by their type.
"""
from __future__ import annotations

import errno as _errno
import re
import sys
from typing import Tuple

from .. import errors as E

PROG = "pytracers"

EXIT_OK = 0
EXIT_ERROR = 1           # anything else: a load/attach failure, an I/O error, a bug
EXIT_USAGE = 2           # bad command line or argument value
EXIT_NOT_FOUND = 3       # no such function / tracepoint / syscall; a list matched nothing
EXIT_NOT_SUPPORTED = 4   # this kernel (or this installation) cannot do it
EXIT_PERMISSION = 5      # not root / missing CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN
EXIT_INTERRUPTED = 130   # a second Ctrl-C while stopping, or Ctrl-C outside a trace

EPILOG = """\
exit status:
  0    success; also a trace ended by --duration, Ctrl-C (SIGINT) or SIGTERM
  1    other error (load or attach failure, I/O error)
  2    usage error: bad command line or argument value
  3    not found: no such function, tracepoint or syscall; a list matched nothing
  4    not supported by this kernel or installation (see `pytracers doctor`)
  5    permission denied: run as root or grant CAP_BPF, CAP_PERFMON (CAP_SYS_ADMIN)
  130  interrupted outside a trace, or a second Ctrl-C while stopping

With --json, stdout carries only JSON lines (one event or row per line);
the probe choice, the summary and errors go to stderr.  --debug shows tracebacks.
"""


class CliError(Exception):
    """An error the CLI reports as one line, with a hint and an exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def one_line(text: str) -> Tuple[str, bool]:
    """The first non-empty line of ``text`` (without a trailing ``:``/``;``),
    and whether more lines followed."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if not lines:
        return "", False
    return lines[0].rstrip(":;"), len(lines) > 1


def classify(exc: BaseException, command: str = "") -> Tuple[int, str, str]:
    """(exit status, one-line message, hint) for an exception."""
    if isinstance(exc, CliError):
        msg, _ = one_line(str(exc))
        return exc.code, msg, exc.hint
    msg, more = one_line(str(exc))
    if isinstance(exc, E.TargetNotFoundError):
        stem = _glob_stem(exc.name)
        if "function" in exc.kind:
            hint = f"search with: {PROG} list functions '*{stem}*'"
        elif "tracepoint" in exc.kind:
            hint = f"search with: {PROG} list tracepoints '*{stem}*'"
        elif "syscall" in exc.kind:
            hint = f"search with: {PROG} list tracepoints 'sys_enter_*{stem}*'"
        else:
            hint = f"check the name; {PROG} {command or 'COMMAND'} --help"
        return EXIT_NOT_FOUND, msg, hint
    if isinstance(exc, E.NotSupportedError):
        older = exc.min_kernel and _kernel_older_than(exc.min_kernel)
        msg, _ = one_line(f"{exc.feature} is not supported by this kernel: {exc.reason}"
                          + (f" (first available in Linux {exc.min_kernel})" if older else ""))
        hint = cli_words(exc.hint) if exc.hint else \
            f"`{PROG} doctor` shows what this kernel supports"
        return EXIT_NOT_SUPPORTED, msg, hint
    if isinstance(exc, (E.PermissionDeniedError, E.InsecureFileError)) or (
            isinstance(exc, (E.TracefsError, PermissionError))
            and getattr(exc, "errno", None) in (_errno.EPERM, _errno.EACCES)):
        return (EXIT_PERMISSION, msg,
                "run as root (sudo), or grant CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on "
                "kernels before 5.8)")
    if isinstance(exc, (E.BadArgumentError, E.BadTypeError)):
        return EXIT_USAGE, msg, f"{PROG} {command or ''} --help".replace("  ", " ")
    if isinstance(exc, E.VerifierError):
        return EXIT_ERROR, msg, "--debug prints the verifier log"
    hint = "--debug shows the details" if more else ""
    if not isinstance(exc, (E.PytracersError, OSError)):
        msg = f"{type(exc).__name__}: {msg}"
        hint = "this is a bug in pytracers; --debug shows the traceback"
    return EXIT_ERROR, msg, hint


def _glob_stem(name: str) -> str:
    """A piece of a mistyped name worth searching for: the start of its
    longest word ("no_such_function_xyz" -> "funct", "do_unlinkatt" -> "unlin")."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name.split(":")[-1]) if w]
    return max(words, key=len)[:5] if words else ""


def _kernel_older_than(version: str) -> bool:
    """Is the running kernel older than ``version`` ("5.2", "6.1"...)?"""
    from ..features import kernel_version
    wanted = []
    for part in version.split(".")[:2]:
        wanted.append(int("".join(c for c in part if c.isdigit()) or "0"))
    return kernel_version() < tuple(wanted)


def cli_words(hint: str) -> str:
    """A library hint in command-line terms: kind='kprobe' -> --kind kprobe."""
    return re.sub(r"\bkind='(\w+)'", r"--kind \1", hint)


def report_error(exc: BaseException, command: str, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (and its traceback with --debug);
    return its exit status."""
    code, msg, hint = classify(exc, command)
    if debug and not isinstance(exc, CliError):
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    where = f"{PROG} {command}".strip()
    line = f"{where}: error: {msg}"
    if hint:
        line += f" (hint: {hint})"
    print(line, file=sys.stderr, flush=True)
    return code
