"""Summarise test records per kernel and probe kind, and apply the skip rule.

Skip rule: a test of a probe kind the kernel is known to support must not
skip.  Such a skip is counted as a failure and fails the harness.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from typing import Any, Dict, List, Optional, Sequence

ALL_VM = ("5.10", "6.1", "6.12", "latest")
# arm64 legs are named arch-series (kernels.Kernel.label)
ARM64_VM = ("arm64-6.1", "arm64-6.12", "arm64-latest")

KINDS = ["tp", "raw_tp", "tp_btf", "kprobe", "kretprobe", "fentry", "fexit",
         "fmod_ret", "kprobe_multi", "other"]

# Which kernels are known to support each probe kind.  Where a kind is
# expected, its tests must pass (or fail), never skip.
#   kprobe_multi: 5.10 predates it (5.18); Debian's 6.1 has no CONFIG_FPROBE.
#   arm64 6.1: no trampolines (fentry/fexit/fmod_ret attach fails with
#   ENOTSUPP: no DYNAMIC_FTRACE_WITH_DIRECT_CALLS before 6.4), no FPROBE.
EXPECTED: Dict[str, Sequence[str]] = {
    "tp": ALL_VM + ARM64_VM,
    "raw_tp": ALL_VM + ARM64_VM,
    "tp_btf": ALL_VM + ARM64_VM,
    "kprobe": ALL_VM + ARM64_VM,
    "kretprobe": ALL_VM + ARM64_VM,
    "fentry": ALL_VM + ("arm64-6.12", "arm64-latest"),
    "fexit": ALL_VM + ("arm64-6.12", "arm64-latest"),
    "fmod_ret": ALL_VM + ("arm64-6.12", "arm64-latest"),
    "kprobe_multi": ("6.12", "latest", "arm64-6.12", "arm64-latest"),
}

PASSED = ("passed", "xpassed")
SKIPPED = ("skipped", "xfailed")
FAILED = ("failed", "error")


def expected(kind: str, series: str) -> bool:
    return series in EXPECTED.get(kind, ())


def summarize(series: str, results: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Per-kind counts for one kernel.

    Returns {kind: {"passed", "skipped", "failed", "unexpected_skips",
    "skip_reasons": {reason: count}, "failures": [nodeid...],
    "unexpected": [nodeid...]}}.
    """
    table: Dict[str, Dict[str, Any]] = OrderedDict()
    for rec in (results or {}).get("tests", []):
        kind = rec.get("kind") or "other"
        cell = table.setdefault(kind, {"passed": 0, "skipped": 0, "failed": 0,
                                       "unexpected_skips": 0, "skip_reasons": Counter(),
                                       "failures": [], "unexpected": []})
        outcome = rec.get("outcome")
        if outcome in PASSED:
            cell["passed"] += 1
        elif outcome in SKIPPED:
            reason = rec.get("skip_reason") or "(no reason given)"
            if expected(kind, series):
                cell["unexpected_skips"] += 1
                cell["failed"] += 1
                cell["unexpected"].append(f"{rec['nodeid']} ({outcome}): {reason}")
            else:
                cell["skipped"] += 1
                cell["skip_reasons"][reason] += 1
        else:  # failed, error, or never finished (None)
            cell["failed"] += 1
            cell["failures"].append(f"{rec['nodeid']} ({outcome or 'did not finish'})"
                                    + _why(rec.get("message")))
    for cell in table.values():
        cell["skip_reasons"] = dict(cell["skip_reasons"])
    return table


def _why(message: Optional[str], limit: int = 400) -> str:
    """A failure's reason in one line: the first of pytest's ``E`` lines (the
    exception and its message), else the report's last line -- so that a CI
    summary that keeps only these lines still says what failed."""
    lines = [ln.strip() for ln in (message or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    why = next((ln[1:].strip() for ln in lines if ln.startswith("E ")), lines[-1])
    return ": " + (why if len(why) <= limit else why[:limit] + "...")


def _cell(cell: Optional[Dict[str, Any]]) -> str:
    if not cell:
        return "-"
    star = "*" if cell["unexpected_skips"] else ""
    return f"{cell['passed']}/{cell['skipped']}/{cell['failed']}{star}"


def format_table(runs: List[Dict[str, Any]]) -> str:
    """Text table: rows are probe kinds, columns kernels, cells passed/skipped/failed."""
    cols = [r["series"] for r in runs]
    kinds = [k for k in KINDS if any(k in r["table"] for r in runs)]
    kinds += sorted({k for r in runs for k in r["table"]} - set(kinds))
    width = max([12] + [len(c) + 2 for c in cols] + [len(r.get("release") or "") + 2 for r in runs])
    out = []
    out.append("probe kind".ljust(14) + "".join(c.rjust(width) for c in cols))
    out.append("".ljust(14) + "".join(
        (r.get("release") or "?")[: width - 1].rjust(width) for r in runs))
    for k in kinds:
        out.append(k.ljust(14) + "".join(_cell(r["table"].get(k)).rjust(width) for r in runs))
    out.append("")
    out.append("cells: passed/skipped/failed; * = skips on a kernel that has the feature, "
               "counted as failures")
    notes = []
    for r in runs:
        for k in kinds:
            cell = r["table"].get(k)
            if not cell:
                continue
            for reason, n in sorted(cell["skip_reasons"].items()):
                notes.append(f"  [{r['series']}] {k}: {n} skipped: {reason}")
            for item in cell["unexpected"]:
                notes.append(f"  [{r['series']}] {k}: UNEXPECTED SKIP (counted as failure): {item}")
            for item in cell["failures"]:
                notes.append(f"  [{r['series']}] {k}: FAILED {item}")
    if notes:
        out.append("")
        out += notes
    out.append("")
    for r in runs:
        out.append(f"  [{r['series']}] {r.get('status')}: {r.get('summary') or r.get('message') or ''}"
                   .rstrip())
    return "\n".join(out)


def write_json(path: str, runs: List[Dict[str, Any]], ok: bool, table: str = "") -> None:
    data = {
        "ok": ok,
        "table": table,
        "expected": {k: list(v) for k, v in EXPECTED.items()},
        "kernels": OrderedDict((r["series"], r) for r in runs),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
