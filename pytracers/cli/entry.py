"""The entry: the argument parser, dispatch to a command, and the exit status.

Each command family lives in its own module (doctor, listing, trace, exec,
syscalls, agent) with an ``add_command(sub)`` that declares its arguments
and its ``cmd_*`` function; :func:`build_parser` calls them in the order
``--help`` lists them.  A new command is a new module and one line in
COMMANDS.  When the command line names a command, only its module is
imported (a start cost: each module brings what its command needs).
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Any, Optional, Sequence

from .options import Formatter, Parser
from .output import silence_stdout
from .status import EPILOG, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, report_error


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``pytracers`` parser; ``argv`` lets ``pytracers agent`` add the agent's own options."""
    p = Parser(prog=PROG, description="Trace the Linux kernel with precompiled eBPF: "
               "which probe kinds this kernel has, and tracers that pick the right one.",
               epilog=EPILOG, formatter_class=Formatter)
    from .._version import __version__
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    named = next((a for a in argv if not a.startswith("-")), None)
    modules = [m for c, m in COMMANDS if c == named] or list(dict.fromkeys(m for _c, m in COMMANDS))
    for name in modules:
        module: Any = import_module(name, __package__)
        if name == ".agent":
            module.add_command(sub, argv)
        else:
            module.add_command(sub)
    return p


# command -> the module (of this package) that declares it, in --help's order
COMMANDS = (("doctor", ".doctor"), ("list", ".listing"), ("trace", ".trace"), ("exec", ".exec"),
            ("syscalls", ".syscalls"), ("python", ".usdt"), ("profile", ".profile"),
            ("offcpu", ".profile"), ("agent", ".agent"))


def _configure_logging(debug: bool) -> None:
    if debug or "logging" in sys.modules:
        _configure(sys.modules.get("logging") or import_module("logging"), debug)
    else:
        # Nothing logs above INFO on a command's way unless libbpf warns:
        # configure logging when (if ever) it is imported, not at every start
        # (logging brings traceback, tokenize, string: a few ms).
        if not any(isinstance(f, _ConfigureOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _ConfigureOnImport())


def _configure(logging: Any, debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format=f"{PROG}: %(levelname)s: %(name)s: %(message)s",
                        stream=sys.stderr)
    if not debug:
        # libbpf's own messages are folded into the one-line errors (and some,
        # like its "try raising ulimit -l" guess, mislead); --debug shows them.
        logging.getLogger("pytracers.libbpf").setLevel(logging.CRITICAL)


class _ConfigureOnImport:
    """A sys.meta_path finder that finds nothing itself: when ``logging`` is
    about to be imported it takes itself off the path and has the module
    configured (as without --debug) as soon as the module has run."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec
        spec = find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _configure(module, False)
        setattr(loader, "exec_module", exec_module)     # this spec's own loader
        return spec


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:                       # --help, --version, usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug)
    command = str(getattr(args, "command", "") or "")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        return EXIT_OK
    except Exception as exc:
        return report_error(exc, command, debug)
