"""The root file system of a guest of another architecture (arm64).

An x86-64 guest runs on the host's own root (shared read-only over 9p); an
arm64 guest needs arm64 binaries, so it gets a root of its own, built once
and cached beside the kernels (``<cache>/rootfs-<arch>/<key>/root``):

- Debian bookworm's python3, libbpf1, libatomic1, busybox-static, and gcc,
  libc6-dev, systemtap-sdt-dev and bpftool (what the suite runs) for the
  architecture, with their dependencies, downloaded by ``debootstrap
  --download-only --variant=minbase`` and unpacked with ``tar -x
  --keep-directory-symlink`` into a merged-/usr tree (``dpkg-deb -x`` would
  replace the /bin, /lib symlinks by directories).  Maintainer scripts do not
  run: what they would make that the suite needs (/etc/passwd, /etc/group)
  is made here.
- The Python packages the suite needs, at the versions of the interpreter
  running the harness (the project's venv), as the architecture's wheels
  (``pip install --target --platform ... --only-binary=:all:``) into
  /usr/local/lib/python3.X/dist-packages, where Debian's python3 looks.
- Every .py byte-compiled on the host (same Python minor version, same
  bytecode): under emulation, compiling at import costs seconds.

The key is a digest of all the inputs (suite, packages, wheel versions), so
a new pytest in the venv makes a new root; the two newest are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, List

import kernels
from kernels import FetchError, log

SUITE = "bookworm"
PYTHON = "3.11"                    # bookworm's python3
# gcc, libc6-dev, systemtap-sdt-dev: the tests build their target programs
# (uprobe, USDT, profiler, stack targets) with gcc, in the guest as on the host;
# bpftool: a test compares the BTF reader with it; libbpf-dev: bench/run's
# libbpf C consumers (the drain baselines) build in the guest as on the host
DEBS = ["python3", "libbpf1", "libatomic1", "busybox-static", "gcc", "libc6-dev",
        "systemtap-sdt-dev", "bpftool", "libbpf-dev"]
# Python packages of the suite; what they need at run time is added (the
# requirements in the venv's metadata, followed)
WHEELS = ["numpy", "cffi", "pyelftools", "pytest", "prometheus_client"]   # (the test extra's)
PLATFORMS = {"arm64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                       "manylinux_2_17_aarch64", "manylinux2014_aarch64"]}
FORMAT = 3                         # bump when the way the root is made changes


def _versions() -> Dict[str, str]:
    """WHEELS and their run-time requirements, at the versions installed here."""
    from packaging.requirements import Requirement
    out: Dict[str, str] = {}
    todo = list(WHEELS)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise FetchError(f"{name} is not installed in {sys.executable}; the {name} of "
                             "the guest's root is taken at the same version") from None
        for spec in metadata.requires(name) or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name.lower())
    return out


def _key(arch: str, versions: Dict[str, str]) -> str:
    blob = json.dumps({"format": FORMAT, "arch": arch, "suite": SUITE, "debs": DEBS,
                       "wheels": versions, "pytracers": metadata.version("pytracers")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _run(cmd: List[str], **kw) -> None:
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        raise FetchError(f"{' '.join(cmd[:3])}... failed (status {r.returncode}):\n"
                         + "\n".join(r.stdout.splitlines()[-20:]))


def _unpack_debs(debs: List[Path], root: Path) -> None:
    for d in ("usr/bin", "usr/sbin", "usr/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{link}", root / link)
    for deb in debs:
        tar = subprocess.Popen(["tar", "-x", "--keep-directory-symlink", "-C", str(root)],
                               stdin=subprocess.PIPE)
        dpkg = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=tar.stdin)
        assert tar.stdin is not None
        tar.stdin.close()
        if tar.wait() != 0 or dpkg.returncode != 0:
            raise FetchError(f"unpacking {deb.name} failed")


def _finish(root: Path) -> None:
    """What maintainer scripts and the installer would have made."""
    share = root / "usr/share/base-passwd"
    for name in ("passwd", "group"):
        src = share / f"{name}.master"
        if src.is_file():
            shutil.copy(src, root / "etc" / name)
    for d in ("proc", "sys", "dev", "run", "tmp", "root", "mnt", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    py = root / "usr/bin/python3"
    if not py.exists():
        os.symlink(f"python{PYTHON}", py)


def _wheels(arch: str, versions: Dict[str, str], root: Path) -> None:
    target = root / f"usr/local/lib/python{PYTHON}/dist-packages"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
           "--target", str(target), "--only-binary=:all:", "--python-version", PYTHON,
           "--implementation", "cp", "--abi", "cp" + PYTHON.replace(".", "")]
    for plat in PLATFORMS[arch]:
        cmd += ["--platform", plat]
    _run(cmd + [f"{n}=={v}" for n, v in versions.items()])


def _project(root: Path) -> None:
    """pytracers as the venv has it (an editable install): its metadata and
    entry points (the pytest plugin loads through one) and its command; the
    package itself is the repository, on the guest's PYTHONPATH."""
    dist = metadata.distribution("pytracers")
    info = root / f"usr/local/lib/python{PYTHON}/dist-packages/pytracers-{dist.version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    for name in ("METADATA", "entry_points.txt"):
        text = dist.read_text(name)
        if text is not None:
            (info / name).write_text(text)
    (info / "INSTALLER").write_text("scripts/vmtest\n")
    cli = root / "usr/local/bin/pytracers"
    cli.parent.mkdir(parents=True, exist_ok=True)
    cli.write_text(f"#!/usr/bin/python{PYTHON}\nimport sys\nfrom pytracers.cli import main\n"
                   "sys.exit(main())\n")
    cli.chmod(0o755)


def _byte_compile(root: Path) -> None:
    if sys.version_info[:2] != tuple(int(x) for x in PYTHON.split(".")):
        log(f"not byte-compiling the guest root: this is Python "
            f"{sys.version_info[0]}.{sys.version_info[1]}, the guest's is {PYTHON}")
        return
    dirs = [str(root / f"usr/lib/python{PYTHON}"),
            str(root / f"usr/local/lib/python{PYTHON}/dist-packages")]
    # -s/-p: the code objects name the files as the guest sees them
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-s", str(root),
                    "-p", "/", *dirs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def get_rootfs(arch: str, offline: bool = False) -> Path:
    """The root file system for *arch* guests, building it if needed."""
    versions = _versions()
    base = kernels.cache_root() / f"rootfs-{arch}"
    rdir = base / _key(arch, versions)
    with kernels._Lock(base / ".lock"):
        if (rdir / "manifest.json").is_file():
            return rdir / "root"
        if offline:
            raise FetchError(f"--offline and no cached {arch} root for {versions}")
        if not shutil.which("debootstrap"):
            raise FetchError("debootstrap not found (apt-get install debootstrap)")
        t0 = time.monotonic()
        tmp = rdir.with_name(rdir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "dl").mkdir(parents=True)
        mirror = kernels.host_mirrors()["main"]
        log(f"{arch} root: downloading Debian {SUITE} {', '.join(DEBS)} and dependencies")
        _run(["debootstrap", f"--arch={arch}", "--variant=minbase", "--download-only",
              f"--include={','.join(DEBS)}", f"--keyring={kernels.KEYRING}",
              SUITE, str(tmp / "dl"), mirror])
        debs = sorted((tmp / "dl/var/cache/apt/archives").glob("*.deb"))
        root = tmp / "root"
        root.mkdir()
        _unpack_debs(debs, root)
        shutil.rmtree(tmp / "dl")
        _finish(root)
        log(f"{arch} root: wheels {', '.join(f'{n} {v}' for n, v in versions.items())}")
        _wheels(arch, versions, root)
        _project(root)
        _byte_compile(root)
        (tmp / "manifest.json").write_text(json.dumps(
            {"arch": arch, "suite": SUITE, "debs": [d.name for d in debs], "wheels": versions,
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
        tmp.rename(rdir)
        keep = sorted((d for d in base.iterdir() if (d / "manifest.json").is_file()),
                      key=lambda d: (d / "manifest.json").stat().st_mtime, reverse=True)[:2]
        for d in base.iterdir():
            if d.is_dir() and d not in keep:
                shutil.rmtree(d, ignore_errors=True)
        log(f"{arch} root: ready in {time.monotonic() - t0:.0f}s ({rdir})")
        return rdir / "root"
