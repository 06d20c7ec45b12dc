"""``pytracers list tracepoints|functions GLOB``: what exists, and which kinds reach it
(``list symbols``: :mod:`pytracers.cli.user`)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

from .. import errors as E
from ..kinds import RAW_TP, TP, TP_BTF
from .usdt import add_list_usdt
from .options import LIST_FUNCTION_KINDS, Formatter, Parser, common, subcommand
from .output import dumps, note, print_table
from .status import EPILOG, EXIT_NOT_FOUND, EXIT_OK, PROG, CliError

log = logging.getLogger("pytracers.cli")


def add_command(sub: Any) -> None:
    lp = subcommand(sub, "list", "list tracepoints, kernel functions or a binary's symbols "
                                 "matching a glob, or a binary's USDT probes")
    lsub = lp.add_subparsers(dest="what", metavar="WHAT", parser_class=Parser)
    lsub.required = True
    lt = lsub.add_parser("tracepoints", help="tracepoints (category:name) and the kinds that "
                         "reach them", epilog=EPILOG,
                         formatter_class=Formatter)
    lt.add_argument("glob", nargs="?", default="*", metavar="GLOB",
                    help="shell-style pattern on 'category:name' or 'name' (default: *)")
    common(lt, filters=False, duration=False)
    lt.set_defaults(func=cmd_list_tracepoints, command="list tracepoints")
    lf = lsub.add_parser("functions", help="kernel functions (from BTF) and which kinds can "
                         "attach: fentry? kprobe? inlined/notrace?", epilog=EPILOG,
                         formatter_class=Formatter)
    lf.add_argument("glob", metavar="GLOB", help="shell-style pattern, e.g. 'do_sys_*'")
    lf.add_argument("--limit", type=int, default=50,
                    help="check at most this many matches (default 50; 0: all)")
    common(lf, filters=False, duration=False, kinds=LIST_FUNCTION_KINDS)
    lf.set_defaults(func=cmd_list_functions, command="list functions")
    from .user import add_list_command
    add_list_command(lsub)
    add_list_usdt(lsub)


# ---- tracepoints ---------------------------------------------------------------------------

def _tracepoint_kinds(category: str, name: str, btf: Any) -> Tuple[List[str], str]:
    """Which kinds reach a tracefs event, and a note on the others."""
    if category == "syscalls":
        which = "sys_enter" if name.startswith("sys_enter") else "sys_exit"
        return [TP], f"raw_tp/tp_btf: only via {which} (all syscalls, filter by id)"
    kinds = [TP, RAW_TP]
    note_ = ""
    if btf is not None:
        if btf.has(f"btf_trace_{name}", "typedef"):
            kinds.append(TP_BTF)
        else:
            note_ = f"tp_btf: no btf_trace_{name} in the kernel BTF"
    return kinds, note_


def cmd_list_tracepoints(args: argparse.Namespace) -> int:
    from ..kernel import tracefs
    names = tracefs.list_tracepoints(args.glob)
    if not names:
        raise CliError(f"no tracepoint matches {args.glob!r}", EXIT_NOT_FOUND,
                       f"globs match 'category:name' or 'name', e.g. '{PROG} list "
                       "tracepoints \"sched:*\"'")
    btf = _vmlinux_btf()
    rows = []
    for full in names:
        cat, _, name = full.partition(":")
        kinds, extra = _tracepoint_kinds(cat, name, btf)
        rows.append((full, cat, name, kinds, extra))
    if args.json:
        for full, cat, name, kinds, extra in rows:
            d: Dict[str, Any] = {"tracepoint": full, "category": cat, "name": name,
                                 "kinds": kinds}
            if extra:
                d["note"] = extra
            sys.stdout.write(dumps(d) + "\n")
    else:
        print_table([(full, ",".join(kinds), extra) for full, _, _, kinds, extra in rows],
                    ["TRACEPOINT", "KINDS", "NOTE"])
    note(f"{len(rows)} tracepoint{'s' if len(rows) != 1 else ''} match {args.glob!r}")
    return EXIT_OK


def _vmlinux_btf() -> Any:
    try:
        from ..btf import Btf
        return Btf.vmlinux()
    except Exception as e:          # no BTF: still list, without the tp_btf column
        log.debug("no vmlinux BTF: %s", e)
        return None


# ---- functions -----------------------------------------------------------------------------

def cmd_list_functions(args: argparse.Namespace) -> int:
    from .. import features
    btf = _vmlinux_btf()
    if btf is None:
        raise E.NotSupportedError("BTF", "the kernel exposes no /sys/kernel/btf/vmlinux",
                                  min_kernel="5.2", hint="build with CONFIG_DEBUG_INFO_BTF=y")
    names = btf.functions(args.glob)
    if not names:
        stem = args.glob.strip("*?[]")
        sugg = btf.suggest(stem, kind="func") if stem else []
        raise CliError(f"no kernel function matches {args.glob!r}"
                       + (f"; did you mean: {', '.join(sugg)}?" if sugg else ""),
                       EXIT_NOT_FOUND, f"globs are shell-style: {PROG} list functions "
                       f"'*{stem[:6]}*'")
    shown = names if not args.limit else names[:args.limit]
    kinds = [args.kind] if args.kind else list(LIST_FUNCTION_KINDS)
    # A kind this kernel lacks altogether is said once, not on every row.
    kernel_no: Dict[str, str] = {}
    for k in kinds:
        f = features.probe_one(k)
        if not f.supported:
            kernel_no[k] = f.reason + (f" (fix: {f.fix})" if f.fix else "")
    syms = features.kallsyms_functions()
    sites = features.filter_functions()
    blacklist = features.kprobe_blacklist()
    rows: List[Dict[str, Any]] = []
    for fn in shown:
        row: Dict[str, Any] = {"function": fn}
        for k in kinds:
            if k in kernel_no:
                row[k] = {"ok": False, "reason": f"{k} is not available on this kernel: "
                          f"{kernel_no[k]}"}
            else:
                a = features.can_attach(k, fn)
                row[k] = {"ok": bool(a.supported), "reason": a.reason}
        row["symbol"] = _symbol_notes(fn, syms, sites, blacklist)
        rows.append(row)
    if args.json:
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
    else:
        table = []
        for row in rows:
            cells: List[Any] = [row["function"]]
            why = []
            for k in kinds:
                ok = row[k]["ok"]
                cells.append("yes" if ok else ("no*" if k in kernel_no else "no"))
                if not ok and k not in kernel_no:
                    why.append(f"{k}: {row[k]['reason']}")
            cells.append(", ".join(row["symbol"]) or "-")
            cells.append("; ".join(why))
            table.append(cells)
        print_table(table, ["FUNCTION", *[k.upper() for k in kinds], "SYMBOL", "WHY NOT"])
    for k, reason in kernel_no.items():
        note(f"no*: {k} is not available on this kernel: {reason}")
    more = (f" (showing the first {len(shown)}; --limit 0 shows all)"
            if len(shown) < len(names) else "")
    note(f"{len(names)} function{'s' if len(names) != 1 else ''} match {args.glob!r}{more}")
    return EXIT_OK


def _symbol_notes(fn: str, syms: Optional[Set[str]], sites: Optional[Set[str]],
                  blacklist: Optional[Set[str]]) -> List[str]:
    """What the kernel's own lists say about a function (BTF has it: it is listed)."""
    out = []
    if syms is not None:
        out.append("kallsyms" if fn in syms else "inlined (not in kallsyms)")
    if sites is not None:
        out.append("ftrace site" if fn in sites else "notrace (no ftrace site)")
    if blacklist is not None and fn in blacklist:
        out.append("kprobe-blacklisted")
    return out
