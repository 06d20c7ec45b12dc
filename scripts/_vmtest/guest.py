"""Boot one kernel under qemu (TCG) and run one command in it.

The guest sees the host's root file system read-only over 9p with a tmpfs
overlay (see ./init), and a host temp dir ("exchange dir") read-write at
/run/vmtest.  The host writes there:

    command.sh   environment + cd + exec of the command (run in the chroot)
    kernel.env   where the unpacked kernel's config/modules are on the host

and the guest leaves:

    release      uname -r
    status       the command's exit status
    results.json / results.jsonl   test records (scripts/vmtest_results.py)

The serial console is streamed to our stdout.  Lines before the command
starts (boot noise) are only shown with --verbose or when the boot fails.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from kernels import Kernel, log

START = re.compile(r"@@vmtest-start@@ ([0-9.]+)")
STATUS = re.compile(r"@@vmtest-status@@ (\d+)")
ERROR = re.compile(r"@@vmtest-error@@ (.*)")

GUEST_RESULTS = "/run/vmtest/results.json"


@dataclass
class GuestOptions:
    timeout: float = 900.0
    memory_mb: int = 2048
    smp: int = 2
    verbose: bool = False
    prefix: str = ""                 # printed before each console line
    cpu: str = "max"
    cmdline_extra: str = ""
    # A guest of another architecture: its own root (instead of the host's /),
    # and host directories shown at the same path inside it (tag -> path).
    root: str = "/"
    shares: Dict[str, str] = field(default_factory=dict)


@dataclass
class GuestResult:
    series: str
    status: str = "error"            # ok | timeout | boot-failure | crashed | interrupted
    rc: Optional[int] = None
    release: Optional[str] = None
    boot_seconds: Optional[float] = None      # qemu start -> command start (host clock)
    guest_uptime_at_start: Optional[float] = None
    run_seconds: Optional[float] = None       # command start -> qemu exit
    total_seconds: Optional[float] = None
    message: str = ""
    results: Optional[Dict[str, Any]] = None  # from the pytest plugin
    modules: List[str] = field(default_factory=list)


# Running qemu processes, so that an interrupted harness can stop them all.
_live: Set[subprocess.Popen] = set()
_live_lock = threading.Lock()


_stopping = threading.Event()
_out_lock = threading.Lock()


def kill_all() -> None:
    _stopping.set()
    with _live_lock:
        for proc in list(_live):
            if proc.poll() is None:
                proc.kill()


QEMU = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}


def qemu_binary(arch: str = "amd64") -> str:
    return shutil.which(QEMU[arch]) or QEMU[arch]


def _write_command(xfer: Path, argv: List[str], env: Dict[str, str], cwd: str) -> None:
    lines = ["# written by scripts/vmtest; runs inside the guest's chroot"]
    for k, v in env.items():
        lines.append(f"export {k}={shlex.quote(v)}")
    lines.append(f"cd {shlex.quote(cwd)} || exit 125")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    (xfer / "command.sh").write_text("\n".join(lines) + "\n")


def _write_kernel_env(xfer: Path, kernel: Kernel) -> None:
    cfg = str(kernel.config) if kernel.config else ""
    (xfer / "kernel.env").write_text(
        f"KERNEL_CONFIG={shlex.quote(cfg)}\nKERNEL_MODDIR={shlex.quote(str(kernel.moddir))}\n")


# 9p message size per series.  5.10's 9p client allocates two msize-sized
# buffers for every request, so a large msize slows down the many small
# (metadata) requests Python's imports make; newer kernels size small
# requests' buffers to fit, and a large msize makes file reads cheaper.
NINEP_MSIZE = {"5.10": 65536}
NINEP_MSIZE_DEFAULT = 512000


def kernel_cmdline(kernel: Kernel, opts: GuestOptions) -> str:
    parts = [
        "console=ttyAMA0" if kernel.arch == "arm64" else "console=ttyS0", "quiet",
        "panic=-1",             # reboot at once on panic; -no-reboot turns that into exit
        # Under TCG every vCPU reads the host's TSC, so it is synchronised,
        # but the boot-time sync check can fail by timing and leave the
        # guest on the (emulated, slow) HPET.
        "tsc=reliable",
        f"vmtest.msize={NINEP_MSIZE.get(kernel.series, NINEP_MSIZE_DEFAULT)}",
    ]
    if kernel.arch != "amd64":
        parts.remove("tsc=reliable")
    return " ".join(parts + opts.cmdline_extra.split())


def qemu_command(kernel: Kernel, initrd: Path, xfer: Path, opts: GuestOptions) -> List[str]:
    append = kernel_cmdline(kernel, opts)
    if kernel.arch == "arm64":
        # virt: no firmware, the kernel Image is booted directly.  The
        # implementation-defined pointer-authentication algorithm is ~2x
        # cheaper to emulate than the architected QARMA (boot 4-5 s, not 11).
        machine = ["-machine", "virt,accel=tcg",
                   "-cpu", "max,pauth-impdef=on" if opts.cpu == "max" else opts.cpu]
    else:
        machine = ["-machine", "pc,accel=tcg", "-cpu", opts.cpu]
    shares: List[str] = []
    for tag, path in opts.shares.items():
        shares += ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,"
                              "readonly=on,multidevs=remap"]
    return [
        qemu_binary(kernel.arch),
        *machine,
        "-smp", str(opts.smp),
        "-m", str(opts.memory_mb),
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initrd),
        "-append", append,
        "-virtfs", f"local,path={opts.root},mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={xfer},mount_tag=vmtest,security_model=none",
        *shares,
        "-device", "virtio-rng-pci",
    ]


class _Console:
    """Reads the serial console, prints it, and watches for our markers."""

    def __init__(self, stream, opts: GuestOptions, t0: float):
        self.stream = stream
        self.opts = opts
        self.t0 = t0
        self.started = threading.Event()
        self.start_time: Optional[float] = None
        self.uptime: Optional[float] = None
        self.status: Optional[int] = None
        self.error: Optional[str] = None
        self.boot_log: deque = deque(maxlen=200)
        self.tail: deque = deque(maxlen=50)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _emit(self, text: str) -> None:
        with _out_lock:     # whole lines, also with several guests at once
            sys.stdout.write(f"{self.opts.prefix}{text}\n")
            sys.stdout.flush()

    def _run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            if self.status is not None:
                continue            # power-off noise
            m = STATUS.search(line)
            if m:
                before = line[: m.start()]
                if before.strip():
                    self._emit(before)
                self.status = int(m.group(1))
                continue
            m = ERROR.search(line)
            if m:
                self.error = m.group(1)
            if not self.started.is_set():
                m = START.search(line)
                if m:
                    self.start_time = time.monotonic()
                    self.uptime = float(m.group(1))
                    self.started.set()
                    continue
                self.boot_log.append(line)
                if self.opts.verbose:
                    self._emit(line)
                continue
            self.tail.append(line)
            self._emit(line)

    def dump_boot_log(self) -> None:
        for line in self.boot_log:
            if not self.opts.verbose:
                self._emit(line)


def run_guest(kernel: Kernel, argv: List[str], env: Dict[str, str], cwd: str,
              opts: GuestOptions, keep_dir: bool = False) -> GuestResult:
    from initramfs import build_initramfs  # needs pyelftools; checked by main first
    res = GuestResult(series=kernel.label)
    xfer = Path(tempfile.mkdtemp(prefix=f"vmtest-{kernel.label}-"))
    try:
        initrd = xfer / "initrd.cpio"
        res.modules = build_initramfs(kernel, initrd, root=Path(opts.root))
        _write_kernel_env(xfer, kernel)
        if opts.shares:
            # mounted by ./init at the same path inside the guest's root
            (xfer / "shares").write_text("".join(f"{tag} {path}\n"
                                                 for tag, path in opts.shares.items()))
        _write_command(xfer, argv, env, cwd)
        cmd = qemu_command(kernel, initrd, xfer, opts)
        if opts.verbose:
            log(f"{opts.prefix}{' '.join(shlex.quote(c) for c in cmd)}")
        # If we die without cleaning up (SIGKILL), the kernel kills qemu.
        setpriv = shutil.which("setpriv")
        if setpriv:
            cmd = [setpriv, "--pdeathsig", "KILL", "--"] + cmd
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        with _live_lock:
            _live.add(proc)
        console = _Console(proc.stdout, opts, t0)
        try:
            proc.wait(timeout=opts.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            res.status = "timeout"
            res.message = f"killed after the {opts.timeout:.0f}s timeout"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            with _live_lock:
                _live.discard(proc)
        console.thread.join(timeout=10)
        t_end = time.monotonic()
        res.total_seconds = round(t_end - t0, 1)
        if console.start_time is not None:
            res.boot_seconds = round(console.start_time - t0, 1)
            res.guest_uptime_at_start = console.uptime
            res.run_seconds = round(t_end - console.start_time, 1)

        release = xfer / "release"
        if release.is_file():
            res.release = release.read_text().strip()
        status_file = xfer / "status"
        if status_file.is_file() and status_file.read_text().strip().isdigit():
            res.rc = int(status_file.read_text().strip())
        elif console.status is not None:
            res.rc = console.status

        qemu_exit = f"qemu exit status {proc.returncode}"
        if proc.returncode is not None and proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            qemu_exit = f"qemu killed by {sig}" + (
                " -- not by us; the host's OOM killer?" if sig == "SIGKILL" else "")
        if _stopping.is_set():
            res.status, res.message = "interrupted", "stopped by the harness"
        elif res.status != "timeout":
            if res.rc is not None:
                res.status = "ok"
            elif console.start_time is None:
                res.status = "boot-failure"
                res.message = console.error or f"guest did not reach the command ({qemu_exit})"
            else:
                res.status = "crashed"
                res.message = console.error or f"guest stopped without an exit status ({qemu_exit})"
        if res.status in ("boot-failure",) or (res.status == "timeout" and console.start_time is None):
            console.dump_boot_log()
        res.results = _read_results(xfer)
        return res
    finally:
        if keep_dir:
            log(f"{opts.prefix}exchange dir kept: {xfer}")
        else:
            shutil.rmtree(xfer, ignore_errors=True)


def _read_results(xfer: Path) -> Optional[Dict[str, Any]]:
    full = xfer / "results.json"
    if full.is_file():
        try:
            data = json.loads(full.read_text())
            data["complete"] = True
            return data
        except ValueError:
            pass
    partial = xfer / "results.jsonl"
    if partial.is_file():
        tests: Dict[str, Any] = {}
        for line in partial.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            tests[rec["nodeid"]] = rec
        return {"complete": False, "summary": "", "tests": list(tests.values())}
    return None
