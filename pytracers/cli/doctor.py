"""``pytracers doctor``: what this kernel supports, with the reason for each no and the fix."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict

from .options import common, subcommand
from .output import dumps, note, print_table
from .status import EXIT_OK


def add_command(sub: Any) -> None:
    d = subcommand(sub, "doctor", "what this kernel supports, with the reason for each no and "
                                  "the fix")
    common(d, filters=False, duration=False)
    d.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .. import features
    from ..kernel.host import missing_bpf_caps
    report = features.probe()
    rows = [_feature_row(f) for f in report]
    if args.json:
        for r in rows:
            sys.stdout.write(dumps(r) + "\n")
    else:
        print_table([(r["feature"], "yes" if r["available"] else
                      ("no" if r["conclusive"] else "?"), r["reason"], r["fix"] or "")
                     for r in rows], ["FEATURE", "OK", "REASON", "FIX"])
    cap = missing_bpf_caps(tracing=True)
    tail = (f"; not privileged (needs {cap}): answers marked ? are inconclusive, run as root"
            if cap else "")
    note(f"kernel {report.kernel} ({report.arch}), probed in "
         f"{report.seconds * 1000:.0f} ms{tail}")
    for line in report.arch_notes:
        note(f"{report.arch}: {line}")
    return EXIT_OK


def _feature_row(f: Any) -> Dict[str, Any]:
    return {"feature": f.name, "available": bool(f.supported), "reason": f.reason or "",
            "fix": f.fix or None, "conclusive": bool(f.conclusive),
            "min_kernel": f.min_kernel}
