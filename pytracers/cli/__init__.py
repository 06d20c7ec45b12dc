"""The ``pytracers`` command line (also ``python -m pytracers``).

Subcommands::

    pytracers doctor [--json]                 what this kernel can do, and why not
    pytracers list tracepoints GLOB           tracepoints, and which kinds reach them
    pytracers list functions GLOB             kernel functions, and which kinds can attach
    pytracers trace [KIND:]TARGET             a kernel function, syscall or tracepoint, kind chosen
    pytracers exec                            process executions (like execsnoop)
    pytracers syscalls                        live syscall counts and latency per process
    pytracers agent --listen HOST:PORT        Prometheus exporter (pytracers.agent)

Output contract: with ``--json`` stdout carries JSON lines only, one event
(or one table row) per line; everything for humans -- the probe kind chosen
and why, the end-of-run summary, errors -- goes to stderr.  Errors are one
line with a hint and an exit status per class (see EXIT_* below); tracebacks
only with ``--debug``.  SIGINT and SIGTERM stop a trace cleanly: the links are
detached, the summary printed, and the status is 0.

The CLI only drives the library (tracers, feature prober, tracefs, BTF); it
loads no BPF of its own making.
"""
from __future__ import annotations

# The package's modules: entry (parser, dispatch, main), status (errors ->
# one line and an exit status), options (the kinds a user may name, shared
# options), output (JSON lines, tables), loop (the event loop, stopping), and
# one module per command family: doctor, listing, trace, exec, syscalls, agent.
from .entry import build_parser, main
from .status import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_NOT_SUPPORTED, EXIT_OK,
                     EXIT_PERMISSION, EXIT_USAGE, CliError, classify)
from .trace import Target, parse_target

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOT_FOUND",
           "EXIT_NOT_SUPPORTED", "EXIT_PERMISSION", "EXIT_INTERRUPTED"]
