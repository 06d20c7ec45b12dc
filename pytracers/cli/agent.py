"""``pytracers agent``: the Prometheus exporter of :mod:`pytracers.agent`."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from .options import _listen, common, subcommand
from .status import EXIT_NOT_SUPPORTED, CliError


def add_command(sub: Any, argv: Sequence[str]) -> None:
    a = subcommand(sub, "agent", "serve Prometheus metrics (exec counts, syscall counts and "
                                 "latency, lost events) over HTTP")
    a.add_argument("--listen", type=_listen, default=("127.0.0.1", 9435), metavar="HOST:PORT",
                   help="address to serve /metrics on (default 127.0.0.1:9435; port 0: any "
                        "free port)")
    common(a, json_lines=False)      # the agent's output is its /metrics page
    a.set_defaults(func=cmd_agent)
    if argv and "agent" in argv[:1]:
        from ..agent import add_arguments   # the agent's own options
        add_arguments(a)


def cmd_agent(args: argparse.Namespace) -> int:
    try:
        import prometheus_client  # noqa: F401  the agent's one optional dependency
    except ModuleNotFoundError as e:
        if e.name != "prometheus_client":
            raise
        raise CliError("the monitoring agent is not available in this installation "
                       "(prometheus_client is missing)", EXIT_NOT_SUPPORTED,
                       "pip install 'pytracers[agent]'") from e
    from ..agent import main
    return int(main(args) or 0)
