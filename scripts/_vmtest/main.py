"""scripts/vmtest: run the test suite (or a command) on Debian kernels under qemu.

Usage:
    scripts/vmtest [--arch amd64|arm64] [--kernel 5.10|6.1|6.12|latest|all|arm64-SERIES]...
                   [--json FILE] [--tests PATH] [--pytest-args ARGS] [--timeout SECONDS]
                   [--jobs N] [--memory MB] [--smp N] [--offline] [--verbose]
                   [--env NAME=VALUE]... [-- COMMAND...]
    scripts/vmtest --setup [--kernel ...]

Without COMMAND the test suite runs in each guest
(``python -m pytest -q -p vmtest_results TESTS``) and a kernel x probe-kind
table is printed at the end.  With COMMAND, it runs in the guest from the
repository root with this interpreter's environment, and (for one kernel)
its exit status becomes ours.

--arch arm64 boots Debian's arm64 kernels under qemu-system-aarch64 (-M virt)
on a root file system of their own (scripts/_vmtest/rootfs.py: Debian's
python3 and libbpf1 for arm64 and the venv's Python packages as aarch64
wheels, built once and cached beside the kernels); the repository and the
kernel's tree are shared into it at their host paths.  The legs are named
arm64-<series> in the results (PYTRACERS_VM_KERNEL) and the table, and
--kernel takes those names too, so one run can mix architectures (CI:
``--kernel all --kernel arm64-6.1 --kernel arm64-latest --jobs 2``); the
kernels start in the order given.

Exit status: the command's status for a single kernel (124 on timeout, 125
if the guest never ran it or died); with several kernels 0 if every run
succeeded, else 1.  A skip of a probe kind the kernel supports (see
report.EXPECTED) makes a zero status 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCRIPTS = HERE.parent

import kernels  # noqa: E402
import report  # noqa: E402
from guest import GUEST_RESULTS, kill_all  # noqa: E402

APT_PREREQS = {
    # package: how we notice it is missing
    "qemu-system-x86": lambda: shutil.which("qemu-system-x86_64") is not None,
    "busybox-static": lambda: _static_busybox() is not None,
    "debian-archive-keyring": lambda: os.path.exists(kernels.KEYRING),
}
# and for guests of another architecture
ARCH_PREREQS = {
    "arm64": {
        "qemu-system-arm": lambda: shutil.which("qemu-system-aarch64") is not None,
        "debootstrap": lambda: shutil.which("debootstrap") is not None,
    },
}

# Kernel options worth seeing next to the results (None: not set).
REPORTED_CONFIG = ["CONFIG_KPROBES", "CONFIG_FPROBE", "CONFIG_DEBUG_INFO_BTF",
                   "CONFIG_FUNCTION_ERROR_INJECTION", "CONFIG_BPF_KPROBE_OVERRIDE",
                   "CONFIG_BPF_LSM", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS"]

EXIT_TIMEOUT = 124
EXIT_GUEST_FAILED = 125


log = kernels.log


def _static_busybox():
    try:
        from initramfs import find_static_busybox
    except ImportError:  # pyelftools missing; reported separately
        return None
    return find_static_busybox()


# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------

def _apt_get(args: List[str]) -> int:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(["apt-get"] + args, env=env, stdin=subprocess.DEVNULL,
                          stdout=sys.stderr).returncode


def ensure_prerequisites(install: bool, arch: str = kernels.ARCH) -> None:
    prereqs = dict(APT_PREREQS, **ARCH_PREREQS.get(arch, {}))
    if arch != kernels.ARCH:
        del prereqs["qemu-system-x86"], prereqs["busybox-static"]   # from the guest's root
    if importlib.util.find_spec("elftools") is None:
        sys.exit(f"vmtest: pyelftools is missing from {sys.executable}; install the project "
                 f"(pip install -e .) or run: {sys.executable} -m pip install pyelftools")
    missing = [pkg for pkg, present in prereqs.items() if not present()]
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            sys.exit(f"vmtest: {tool} not found: this harness needs a Debian host")
    if not missing:
        return
    if not install or os.geteuid() != 0:
        sys.exit(f"vmtest: missing host packages: {' '.join(missing)} "
                 f"(run as root: scripts/vmtest --setup)")
    log(f"installing {' '.join(missing)}")
    args = ["install", "-y", "--no-install-recommends"] + missing
    if _apt_get(["-q"] + args) != 0:
        log("install failed; refreshing the package index and retrying")
        _apt_get(["-q", "update"])
        if _apt_get(["-q"] + args) != 0:
            sys.exit(f"vmtest: apt-get install {' '.join(missing)} failed")
    still = [pkg for pkg, present in prereqs.items() if not present()]
    if still:
        sys.exit(f"vmtest: still missing after install: {' '.join(still)}")


# ---------------------------------------------------------------------------
# Guest environment
# ---------------------------------------------------------------------------

def guest_env(series: str, extra: List[str], own_root: bool = False,
              python: Optional[str] = None) -> Dict[str, str]:
    """Environment of the guest command: this interpreter's bin dir (or
    ``python``'s, the suite's interpreter on this kernel) first on PATH (so
    python3 is the venv's), no bytecode writes, and the kernel's name (the
    series, arch-series for another architecture) for the suite.  A guest
    with a root of its own (``own_root``) runs that root's python3, which
    finds pytracers in the repository."""
    bindir = os.path.dirname(os.path.abspath(python or sys.executable))
    if own_root:
        bindir = "/usr/local/bin"
    env = {
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "TERM": os.environ.get("TERM", "dumb") if sys.stdout.isatty() else "dumb",
        "COLUMNS": str(shutil.get_terminal_size((100, 24)).columns),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{REPO}:{SCRIPTS}" if own_root else str(SCRIPTS),
        "PYTRACERS_VM_KERNEL": series,
        "VMTEST_RESULTS": GUEST_RESULTS,
    }
    venv = os.environ.get("VIRTUAL_ENV")
    if sys.prefix != sys.base_prefix:
        venv = sys.prefix
    if python:
        home = os.path.dirname(bindir)
        venv = home if os.path.isfile(os.path.join(home, "pyvenv.cfg")) else None
    if venv and not own_root:
        env["VIRTUAL_ENV"] = venv
    for item in extra:
        name, _, value = item.partition("=")
        env[name] = value
    return env


GUEST_PYTHON = "/usr/bin/python3"      # in a guest's own root
CLANG_CACHE = f"/tmp/pytracers-test-clang-{os.getuid()}"   # tests/test_bad_inputs.py's


def suite_command(tests: str, pytest_args: str, own_root: bool = False,
                  python: Optional[str] = None) -> List[str]:
    python = python or (GUEST_PYTHON if own_root else sys.executable)
    return ([python, "-m", "pytest", "-q", "-p", "vmtest_results", tests]
            + shlex.split(pytest_args))


# ---------------------------------------------------------------------------
# One kernel
# ---------------------------------------------------------------------------

def run_one(kernel: "kernels.Kernel", argv: List[str], args, prefix: str, smp: int) -> Dict[str, Any]:
    from guest import GuestOptions, run_guest
    if kernel.arch != kernels.ARCH and not args.smp:
        # at least two: the ring reader's ordering stress
        # (tests/test_ringbuf_ordering.py) needs a producer and a reader at
        # once, and on arm64 that is the test that matters
        smp = max(smp, 2)
    opts = GuestOptions(timeout=args.timeout, memory_mb=args.memory, smp=smp,
                        verbose=args.verbose, prefix=prefix, cmdline_extra=args.append,
                        cpu=args.cpu)
    root = args.roots.get(kernel.arch)
    own_root = root is not None
    python = args.python.get(kernel.label)      # (none with a command: parse_args)
    env = guest_env(kernel.label, args.env, own_root, python)
    if own_root:
        opts.root = str(root)
        opts.shares = {"repo": str(REPO), "kernel": str(kernel.tree)}
        # BPF objects the host's suite compiled with clang-19 (the same on
        # every machine; tests/test_bad_inputs.py): that root has no clang-19
        if os.path.isdir(CLANG_CACHE):
            opts.shares["clang"] = CLANG_CACHE
            env["PYTRACERS_TEST_CLANG_CACHE"] = CLANG_CACHE
    log(f"{prefix}booting {kernel.release} ({kernel.label})"
        + (f", the suite under {python}" if python else ""))
    res = run_guest(kernel, argv, env, str(REPO), opts,
                    keep_dir=args.keep)
    results = res.results or {}
    run: Dict[str, Any] = {
        "series": kernel.label,
        "arch": kernel.arch,
        "release": res.release or kernel.release,
        "packages": kernel.packages,
        "config": {name: kernel.config_value(name) for name in REPORTED_CONFIG},
        "status": res.status,
        "rc": res.rc,
        "message": res.message,
        "boot_seconds": res.boot_seconds,
        "guest_uptime_at_start": res.guest_uptime_at_start,
        "run_seconds": res.run_seconds,
        "total_seconds": res.total_seconds,
        "modules": res.modules,
        "summary": results.get("summary", ""),
        "results_complete": results.get("complete"),
        "table": report.summarize(kernel.label, results) if results else {},
        "unexpected_skips": 0,
        "tests": results.get("tests", []),
    }
    run["unexpected_skips"] = _violations(run)
    if res.results is not None and not run["summary"] and res.status != "ok":
        run["summary"] = f"incomplete: {len(run['tests'])} tests recorded before the guest stopped"
    times = ", ".join(f"{what} {secs}s" for what, secs in (
        ("boot", res.boot_seconds), ("command", res.run_seconds), ("total", res.total_seconds))
        if secs is not None)
    log(f"{prefix}{run['release']}: {res.status}, exit status {res.rc}, {times}"
        + (f" -- {res.message}" if res.message else ""))
    return run


def _violations(run: Dict[str, Any]) -> int:
    return sum(c["unexpected_skips"] for c in run["table"].values())


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv: List[str]):
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    else:
        command = []
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="scripts/vmtest", description=doc[0],
                                epilog="\n\n".join(doc[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=kernels.ARCH, choices=kernels.ARCHES,
                   help="the kernels' architecture (default amd64; arm64 runs under "
                        "qemu-system-aarch64 on a root of its own)")
    p.add_argument("--kernel", action="append", metavar="SERIES",
                   help="5.10, 6.1, 6.12, latest or all, of --arch; arm64-6.1 etc. for "
                        "another architecture (repeatable; default: all)")
    p.add_argument("--json", metavar="FILE", help="write per-kernel results and the table here")
    p.add_argument("--tests", default=os.environ.get("VMTEST_TESTS", "tests"),
                   help="test path for the default pytest run (default: tests)")
    p.add_argument("--pytest-args", default=os.environ.get("VMTEST_PYTEST_ARGS", ""),
                   help="extra pytest arguments, one shell-quoted string (env VMTEST_PYTEST_ARGS)")
    p.add_argument("--timeout", type=float, default=float(os.environ.get("VMTEST_TIMEOUT", 900)),
                   help="seconds before a guest is killed (default 900, env VMTEST_TIMEOUT)")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("VMTEST_JOBS", 1)),
                   help="kernels to run at once (default 1, env VMTEST_JOBS); each guest "
                        "gets host CPUs / jobs vCPUs")
    p.add_argument("--memory", type=int, default=2048, help="guest memory in MiB (default 2048)")
    p.add_argument("--smp", type=int, default=0,
                   help="guest CPUs (default: host CPUs / jobs, at least 2 for another arch)")
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--cpu", default="max", help="qemu CPU model (default max)")
    p.add_argument("--python", action="append", default=[], metavar="KERNEL=PATH",
                   help="the interpreter (a host path the guest sees) of the default pytest "
                        "run on KERNEL, e.g. 5.10=.venv-py3.9/bin/python (repeatable; "
                        "default: this one, or the guest root's for another arch)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the guest command")
    p.add_argument("--offline", action="store_true",
                   help="use cached kernels only; no apt index refresh")
    p.add_argument("--refresh", action="store_true",
                   help="refresh the package indexes even if they are recent "
                        "(default: when older than 6 h, env VMTEST_INDEX_MAX_AGE seconds)")
    p.add_argument("--setup", action="store_true",
                   help="install host prerequisites and download the kernels, then exit")
    p.add_argument("--keep", action="store_true", help="keep the exchange dir (debugging)")
    p.add_argument("-v", "--verbose", action="store_true", help="show boot messages")
    args = p.parse_args(argv)
    # (arch, series) pairs, in the order given
    legs: List[Tuple[str, str]] = []
    for k in args.kernel or ["all"]:
        arch, _, name = k.rpartition("-") if k.split("-", 1)[0] in kernels.ARCHES else ("", "", k)
        arch = arch or args.arch
        for s in (kernels.ALL_SERIES if name == "all" else [name]):
            if s not in kernels.SERIES:
                p.error(f"unknown kernel {k!r}; choose from {', '.join(kernels.ALL_SERIES)}, "
                        f"all, or ARCH-SERIES ({', '.join(kernels.ARCHES)})")
            if (arch, s) not in legs:
                legs.append((arch, s))
    args.legs = legs
    args.command = command
    pythons, args.python = args.python, {}
    if pythons and command:
        p.error("--python chooses the interpreter of the default pytest run, not of a command")
    for item in pythons:
        label, sep, path = item.partition("=")
        if not sep or not path:
            p.error(f"--python wants KERNEL=PATH, got {item!r}")
        if label not in {kernels.label_of(a, s) for a, s in legs}:
            p.error(f"--python {item!r}: {label!r} is not a kernel of this run")
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            p.error(f"--python {item!r}: {path!r} is not an executable file")
        args.python[label] = os.path.abspath(path)
    # The guest runs from the repository root; a test path that exists from
    # here is made absolute so it means the same there.
    if not os.path.isabs(args.tests) and os.path.exists(args.tests):
        args.tests = os.path.abspath(args.tests)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    arches = list(dict.fromkeys(arch for arch, _ in args.legs))
    for arch in arches:
        ensure_prerequisites(install=True, arch=arch)

    # 1. kernels (all before booting any, so fetch problems show up early)
    # (in parallel: each series has its own apt state and lock)
    t0 = time.monotonic()
    max_age = 0 if args.refresh else float(os.environ.get(
        "VMTEST_INDEX_MAX_AGE", kernels.DEFAULT_INDEX_MAX_AGE))
    fetched: List[kernels.Kernel] = []
    errors: List[str] = []
    with concurrent.futures.ThreadPoolExecutor(len(args.legs)) as fetch_pool:
        futs = [fetch_pool.submit(kernels.get_kernel, s, args.offline, max_age, arch)
                for arch, s in args.legs]
        args.roots = {}            # arch -> the root of its guests (another arch's)
        for arch in arches:
            if arch != kernels.ARCH:
                import rootfs
                try:
                    args.roots[arch] = rootfs.get_rootfs(arch, args.offline)
                except kernels.FetchError as err:
                    errors.append(str(err))
        for fut in futs:
            try:
                fetched.append(fut.result())
            except kernels.FetchError as err:
                errors.append(str(err))
    for msg in errors:
        log(f"ERROR: {msg}")
    if errors:
        return EXIT_GUEST_FAILED
    log(f"kernels ready in {time.monotonic() - t0:.1f}s: "
        + ", ".join(f"{k.label}={k.release}" for k in fetched))
    if args.setup:
        return 0

    # 2. run
    suite = not args.command

    def argv_of(k: "kernels.Kernel") -> List[str]:
        if not suite:
            return args.command
        return suite_command(args.tests, args.pytest_args, k.arch in args.roots,
                             args.python.get(k.label))

    jobs = min(args.jobs, len(fetched))
    smp = args.smp or max(1, (os.cpu_count() or 1) // jobs)
    multi = len(fetched) > 1
    runs: List[Dict[str, Any]] = []
    if jobs == 1:
        for k in fetched:
            runs.append(run_one(k, argv_of(k), args, f"[{k.label}] " if multi else "", smp))
    else:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futs = [pool.submit(run_one, k, argv_of(k), args, f"[{k.label}] ", smp)
                    for k in fetched]
            try:
                runs = [f.result() for f in futs]
            except BaseException:
                # Interrupted: stop the guests, or leaving this block would
                # wait for them.
                for f in futs:
                    f.cancel()
                kill_all()
                raise

    # 3. report
    violations = sum(_violations(r) for r in runs)
    all_ok = all(r["status"] == "ok" and r["rc"] == 0 for r in runs) and violations == 0
    table = ""
    if suite or any(r["tests"] for r in runs):
        table = report.format_table(runs)
        print("\n" + table, flush=True)
    if violations:
        log(f"{violations} test(s) skipped on a kernel that supports their probe kind")
    if args.json:
        report.write_json(args.json, runs, all_ok, table)
        log(f"results written to {args.json}")

    if len(runs) == 1:
        r = runs[0]
        if r["status"] == "timeout":
            return EXIT_TIMEOUT
        if r["status"] != "ok" or r["rc"] is None:
            return EXIT_GUEST_FAILED
        return r["rc"] if r["rc"] != 0 or not violations else 1
    return 0 if all_ok else 1


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_all()
        log("interrupted; guests stopped")
        sys.exit(130)
