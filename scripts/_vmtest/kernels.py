"""Find, download and cache Debian's kernel packages for the VM matrix.

Each kernel *series* ("5.10", "6.1", "6.12", "latest") maps to Debian suites.
We never touch the host's apt state: every series gets a private apt
configuration (sources list, lists, cache, empty dpkg status) under the cache
directory, pointing at the mirror URIs the host already has configured in
/etc/apt.  The exact binary package names are resolved by following the
Depends chain of the ``linux-image-amd64`` meta-package; nothing here knows an
ABI number.

Cache layout (``$XDG_CACHE_HOME/pytracers/kernels``, default ``~/.cache/...``)::

    apt/<key>/               private apt state for that series
    <key>/<version>/         unpacked packages (dpkg-deb -x) + manifest.json

where <key> is the series for amd64 kernels ("6.1") and series-arch for the
others ("6.1-arm64"): the same series of another architecture is another
kernel package (``linux-image-arm64``'s Depends chain).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCH = "amd64"                 # the default architecture (Debian's name)
ARCHES = ("amd64", "arm64")


def meta_package(arch: str) -> str:
    return f"linux-image-{arch}"


def cache_key(series: str, arch: str = ARCH) -> str:
    """The cache directory (and apt state) name of *series* on *arch*."""
    return series if arch == ARCH else f"{series}-{arch}"

# Suites that make up each series.  "security" entries use the host's
# security mirror URI; the rest use its main archive URI.
SERIES: Dict[str, List[Tuple[str, str]]] = {
    "5.10": [("main", "bullseye"), ("security", "bullseye-security")],
    "6.1": [("main", "bookworm"), ("security", "bookworm-security")],
    "6.12": [("main", "trixie"), ("security", "trixie-security")],
    "latest": [("main", "sid")],
}
ALL_SERIES = list(SERIES)

# Suite names we accept as "this apt entry is Debian's own archive".
_DEBIAN_CODENAMES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "stable", "oldstable", "oldoldstable", "testing", "unstable",
    "experimental",
}

# Kernel packages carry a version/ABI right after their prefix,
# e.g. linux-image-6.1.0-30-amd64, linux-binary-7.2.13+deb14-amd64.
_ABI_PACKAGE = re.compile(r"^linux-(image|binary|modules|base)-\d")


class FetchError(RuntimeError):
    pass


_log_lock = threading.Lock()


def log(msg: str) -> None:
    """A status line on stderr (whole lines, also from several threads)."""
    with _log_lock:
        sys.stderr.write("".join(f"vmtest: {line}\n" for line in msg.splitlines()))
        sys.stderr.flush()


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytracers" / "kernels"


# ---------------------------------------------------------------------------
# Host apt sources: find the mirror URIs already configured on this machine.
# ---------------------------------------------------------------------------

@dataclass
class AptEntry:
    uri: str
    suites: List[str]


def _parse_one_line_sources(text: str) -> Iterable[AptEntry]:
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        # deb [opt=val ...] uri suite [components...]
        line = re.sub(r"\[[^\]]*\]", " ", line)
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            yield AptEntry(parts[1], [parts[2]])


def _parse_deb822_sources(text: str) -> Iterable[AptEntry]:
    # Paragraphs separated by blank lines; "#" lines are comments; a line
    # starting with whitespace continues the previous field.
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    for para in re.split(r"\n\s*\n", "\n".join(lines)):
        fields: Dict[str, str] = {}
        key = None
        for ln in para.splitlines():
            if ln[:1].isspace() and key:
                fields[key] += " " + ln.strip()
            elif ":" in ln:
                key, val = ln.split(":", 1)
                key = key.strip().lower()
                fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            yield AptEntry(uri, fields.get("suites", "").split())


def host_apt_entries() -> List[AptEntry]:
    entries: List[AptEntry] = []
    main = Path("/etc/apt/sources.list")
    if main.is_file():
        entries += _parse_one_line_sources(main.read_text(errors="replace"))
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = Path(f).read_text(errors="replace")
        except OSError:
            continue
        if f.endswith(".list"):
            entries += _parse_one_line_sources(text)
        elif f.endswith(".sources"):
            entries += _parse_deb822_sources(text)
    return entries


def host_mirrors() -> Dict[str, str]:
    """Return {"main": uri, "security": uri} taken from the host's apt config.

    Environment overrides: VMTEST_DEBIAN_MIRROR, VMTEST_DEBIAN_SECURITY_MIRROR.
    """
    found: Dict[str, str] = {}
    for e in host_apt_entries():
        base = [s.split("/")[0] for s in e.suites]
        codenames = {re.sub(r"-(updates|backports|security|proposed-updates)$", "", s) for s in base}
        if not codenames & _DEBIAN_CODENAMES:
            continue  # a third-party repository
        kind = "security" if any(s.endswith("-security") for s in base) else "main"
        found.setdefault(kind, e.uri.rstrip("/"))
    if os.environ.get("VMTEST_DEBIAN_MIRROR"):
        found["main"] = os.environ["VMTEST_DEBIAN_MIRROR"].rstrip("/")
    if os.environ.get("VMTEST_DEBIAN_SECURITY_MIRROR"):
        found["security"] = os.environ["VMTEST_DEBIAN_SECURITY_MIRROR"].rstrip("/")
    if "main" not in found:
        raise FetchError("no Debian archive found in /etc/apt/sources.list{,.d}; "
                         "set VMTEST_DEBIAN_MIRROR")
    if "security" not in found:
        guess = re.sub(r"/debian$", "/debian-security", found["main"])
        if guess != found["main"]:
            log(f"no security archive configured on this host; guessing {guess}")
            found["security"] = guess
    return found


# ---------------------------------------------------------------------------
# Private apt configuration per series.
# ---------------------------------------------------------------------------

class PrivateApt:
    """apt-get/apt-cache confined to <cache>/apt/<series>."""

    def __init__(self, series: str, root: Path, arch: str = ARCH):
        self.series = series
        self.arch = arch
        self.dir = root / "apt" / cache_key(series, arch)
        self.sources = self.dir / "sources.list"

    def _opts(self) -> List[str]:
        d = self.dir
        opts = {
            "Dir::Etc::SourceList": str(self.sources),
            "Dir::Etc::SourceParts": str(d / "sources.list.d"),
            "Dir::Etc::Preferences": str(d / "preferences"),
            "Dir::Etc::PreferencesParts": str(d / "preferences.d"),
            "Dir::State::Lists": str(d / "lists"),
            "Dir::State::status": str(d / "status"),
            "Dir::Cache": str(d / "cache"),
            # Some hosts disable apt's binary cache; ours is private and
            # makes the repeated apt-cache calls below fast.
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "",
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "Acquire::Languages": "none",
        }
        if os.geteuid() == 0:
            # The private dirs live in root's home, which the unprivileged
            # download user cannot write to.
            opts["APT::Sandbox::User"] = "root"
        out: List[str] = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def write_config(self, mirrors: Dict[str, str]) -> None:
        for sub in ("sources.list.d", "preferences.d", "lists/partial",
                    "cache/archives/partial"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        (self.dir / "preferences").touch()
        if not os.path.exists(KEYRING):
            raise FetchError(f"{KEYRING} missing (apt-get install debian-archive-keyring)")
        lines = ["# generated by scripts/vmtest; mirror URIs copied from /etc/apt"]
        for kind, suite in SERIES[self.series]:
            if kind not in mirrors:
                continue
            # Old suites may carry an expired Valid-Until; the signature
            # is still checked.
            opts = f"signed-by={KEYRING} check-valid-until=no"
            lines.append(f"deb [{opts}] {mirrors[kind]} {suite} main")
        text = "\n".join(lines) + "\n"
        if not self.sources.exists() or self.sources.read_text() != text:
            self.sources.write_text(text)

    def run(self, tool: str, args: List[str], cwd: Optional[Path] = None,
            capture: bool = True) -> subprocess.CompletedProcess:
        cmd = [tool] + self._opts() + args
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        return subprocess.run(cmd, cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None,
                              stdin=subprocess.DEVNULL)

    def update(self) -> None:
        r = self.run("apt-get", ["-q", "update"])
        if r.returncode != 0 or re.search(r"^(W|E): .*(Failed|not signed|NO_PUBKEY)", r.stderr, re.M):
            raise FetchError(f"apt-get update for {self.series} failed:\n{r.stderr.strip()}")
        (self.dir / "updated").write_text(self.sources.read_text())

    def resolved(self, refreshed: bool) -> Dict[str, str]:
        """resolve_packages(self), remembered until the index changes."""
        memo = self.dir / "resolved.json"
        stamp = self.dir / "updated"
        try:
            if not refreshed and memo.stat().st_mtime >= stamp.stat().st_mtime:
                return json.loads(memo.read_text())
        except (OSError, ValueError):
            pass
        packages = resolve_packages(self)
        memo.write_text(json.dumps(packages))
        return packages

    def index_age(self) -> float:
        """Seconds since the last successful update with the current sources
        (infinite if never, or if the sources changed since)."""
        stamp = self.dir / "updated"
        try:
            if stamp.read_text() != self.sources.read_text():
                return float("inf")
            return max(0.0, time.time() - stamp.stat().st_mtime)
        except OSError:
            return float("inf")

    def show(self, package: str) -> Dict[str, str]:
        """The candidate version's control record of *package*."""
        r = self.run("apt-cache", ["show", "--no-all-versions", package])
        if r.returncode != 0 or not r.stdout.strip():
            raise FetchError(f"{package} not found in the {self.series} index: {r.stderr.strip()}")
        rec: Dict[str, str] = {}
        key = None
        for ln in r.stdout.split("\n\n")[0].splitlines():
            if ln[:1].isspace() and key:
                rec[key] += "\n" + ln.strip()
            elif ":" in ln:
                key, val = ln.split(":", 1)
                rec[key] = val.strip()
        return rec

    def download(self, pkgs: Dict[str, str], dest: Path) -> None:
        r = self.run("apt-get", ["-q", "download"] + [f"{p}={v}" for p, v in pkgs.items()],
                     cwd=dest, capture=False)
        if r.returncode != 0:
            raise FetchError(f"apt-get download failed for {self.series} (status {r.returncode})")


def _depends(rec: Dict[str, str]) -> List[List[str]]:
    """Depends + Pre-Depends as a list of alternative groups of names."""
    groups = []
    for fld in ("Pre-Depends", "Depends"):
        for item in rec.get(fld, "").split(","):
            alts = [re.sub(r"[\s(:].*", "", a.strip()) for a in item.split("|")]
            alts = [a for a in alts if a]
            if alts:
                groups.append(alts)
    return groups


def resolve_packages(apt: PrivateApt) -> Dict[str, str]:
    """Follow linux-image-<arch>'s Depends to the versioned kernel packages.

    Returns {package: version} of every ABI-specific linux-* package reached
    (image, or binary+modules+base on newer kernels), never the meta package.
    """
    wanted: Dict[str, str] = {}
    todo = [meta_package(apt.arch)]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        rec = apt.show(name)
        if _ABI_PACKAGE.match(name):
            wanted[name] = rec["Version"]
        for alts in _depends(rec):
            # Only walk into kernel packages (meta or versioned); kmod,
            # initramfs-tools, linux-base etc. are not needed to boot.
            for a in alts:
                if a.startswith("linux-") and (_ABI_PACKAGE.match(a) or a.endswith("-" + apt.arch)):
                    todo.append(a)
                    break
    if not any(p.startswith(("linux-image-", "linux-binary-")) for p in wanted):
        raise FetchError(f"could not find the kernel image package below {meta_package(apt.arch)} "
                         f"for {apt.series} (got {sorted(wanted)})")
    return wanted


# ---------------------------------------------------------------------------
# The unpacked kernel in the cache.
# ---------------------------------------------------------------------------

def label_of(arch: str, series: str) -> str:
    """A kernel's name in the matrix: the series ("6.1") for amd64,
    arch-series ("arm64-6.1") for the others."""
    return series if arch == ARCH else f"{arch}-{series}"


@dataclass
class Kernel:
    series: str
    tree: Path                  # root of the unpacked packages
    release: str                # uname -r
    vmlinuz: Path
    moddir: Path                # .../lib/modules/<release>
    config: Optional[Path]
    packages: Dict[str, str] = field(default_factory=dict)
    arch: str = ARCH

    @property
    def label(self) -> str:
        """The kernel's name in the matrix (:func:`label_of`)."""
        return label_of(self.arch, self.series)

    def config_value(self, name: str) -> Optional[str]:
        if not self.config:
            return None
        m = re.search(rf"^{re.escape(name)}=(.*)$", self.config.read_text(errors="replace"), re.M)
        return m.group(1) if m else None


def _load_cached(series: str, vdir: Path, arch: str = ARCH) -> Optional[Kernel]:
    manifest = vdir / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        m = json.loads(manifest.read_text())
        k = Kernel(series=series, tree=vdir, release=m["release"],
                   vmlinuz=vdir / m["vmlinuz"], moddir=vdir / m["moddir"],
                   config=(vdir / m["config"]) if m.get("config") else None,
                   packages=m["packages"], arch=m.get("arch", ARCH))
    except (ValueError, KeyError):
        return None
    return k if k.vmlinuz.is_file() and k.moddir.is_dir() else None


def _version_key(vdir: Path) -> float:
    return (vdir / "manifest.json").stat().st_mtime


def cached_kernels(series: str, root: Optional[Path] = None, arch: str = ARCH) -> List[Kernel]:
    """Complete cached kernels of *series* on *arch*, newest first."""
    sdir = (root or cache_root()) / cache_key(series, arch)
    dirs = sorted((d for d in sdir.glob("*") if (d / "manifest.json").is_file()),
                  key=_version_key, reverse=True)
    return [k for k in (_load_cached(series, d, arch) for d in dirs) if k]


def _unpack(series: str, debs: List[Path], vdir: Path, packages: Dict[str, str],
            arch: str = ARCH) -> Kernel:
    tmp = vdir.with_name(vdir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    # Merged-/usr kernels (trixie on) install to usr/lib/modules.
    moddirs = [d for d in glob.glob(str(tmp / "*lib/modules/*")) + glob.glob(str(tmp / "usr/lib/modules/*"))
               if os.path.isdir(os.path.join(d, "kernel"))]
    if len(moddirs) != 1:
        raise FetchError(f"expected one modules dir in {series} packages, found {moddirs}")
    moddir = Path(moddirs[0])
    release = moddir.name
    # Classic layout: /boot/vmlinuz-<release>, /boot/config-<release>; newer
    # packages keep them beside the modules as vmlinuz and config.
    vmlinuz = next((p for p in (tmp / "boot" / f"vmlinuz-{release}", moddir / "vmlinuz")
                    if p.is_file()), None)
    if vmlinuz is None:
        raise FetchError(f"no vmlinuz for {release} in the {series} packages")
    config = next((p for p in (tmp / "boot" / f"config-{release}", moddir / "config")
                   if p.is_file()), tmp / "missing-config")
    manifest = {
        "series": series,
        "arch": arch,
        "release": release,
        "packages": packages,
        "vmlinuz": str(vmlinuz.relative_to(tmp)),
        "moddir": str(moddir.relative_to(tmp)),
        "config": str(config.relative_to(tmp)) if config.is_file() else None,
        "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(vdir, ignore_errors=True)
    tmp.rename(vdir)
    k = _load_cached(series, vdir, arch)
    assert k is not None
    return k


def _prune(series: str, root: Path, arch: str = ARCH) -> None:
    """Keep the two newest kernels of a series (another run may still be
    using the previous one) and remove older or unfinished ones.  Called
    with the series lock held, so nothing else is downloading."""
    keep = {k.tree for k in cached_kernels(series, root, arch)[:2]}
    for d in (root / cache_key(series, arch)).glob("*"):
        if d.is_dir() and d not in keep:
            shutil.rmtree(d, ignore_errors=True)


class _Lock:
    """Exclusive lock so two harness runs don't fetch the same series at once."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w")

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


DEFAULT_INDEX_MAX_AGE = 6 * 3600


def _fetch(series: str, apt: PrivateApt, root: Path, packages: Dict[str, str]) -> Kernel:
    """Download and unpack *packages* (exact versions) into the cache."""
    version = packages[next(p for p in packages
                            if p.startswith(("linux-image-", "linux-binary-")))]
    vdir = root / cache_key(series, apt.arch) / version
    dl = root / cache_key(series, apt.arch) / (version + ".download")
    shutil.rmtree(dl, ignore_errors=True)
    dl.mkdir(parents=True)
    t0 = time.monotonic()
    log(f"{series}: downloading {' '.join(packages)}")
    apt.download(packages, dl)
    debs = sorted(dl.glob("*.deb"))
    if len(debs) != len(packages):
        raise FetchError(f"expected {len(packages)} .deb files, got {[d.name for d in debs]}")
    size = sum(d.stat().st_size for d in debs)
    t1 = time.monotonic()
    k = _unpack(series, debs, vdir, packages, apt.arch)
    shutil.rmtree(dl, ignore_errors=True)
    log(f"{series}: downloaded {size / 1e6:.0f} MB in {t1 - t0:.1f}s, "
        f"unpacked in {time.monotonic() - t1:.1f}s -> {k.release}")
    _prune(series, root, apt.arch)
    return k


def get_kernel(series: str, offline: bool = False,
               index_max_age: float = DEFAULT_INDEX_MAX_AGE, arch: str = ARCH) -> Kernel:
    """Return the newest kernel of *series* for *arch*, downloading it if needed.

    The series' package index is refreshed when it is older than
    *index_max_age* seconds (0: always).  The packages it names are used from
    the cache when present, else downloaded (if that fails with an older
    index, the index is refreshed and the download retried).  If refreshing,
    resolving or downloading fails, the newest cached kernel of the series is
    used with a warning.  *offline* uses the cache only.
    """
    root = cache_root()
    key = cache_key(series, arch)
    with _Lock(root / f".{key}.lock"):
        cached = cached_kernels(series, root, arch)
        if offline:
            if not cached:
                raise FetchError(f"--offline and no cached kernel for {series}")
            return cached[0]
        apt = PrivateApt(series, root, arch)
        try:
            apt.write_config(host_mirrors())
            refreshed = False
            if apt.index_age() > index_max_age:
                t0 = time.monotonic()
                apt.update()
                refreshed = True
                log(f"{series}: index refreshed in {time.monotonic() - t0:.1f}s")
            packages = apt.resolved(refreshed)
            log(f"{series}: " + ", ".join(f"{p} {v}" for p, v in sorted(packages.items())))
            for k in cached:
                if k.packages == packages:
                    log(f"{series}: using cached {k.release} ({k.tree})")
                    return k
            try:
                return _fetch(series, apt, root, packages)
            except FetchError:
                if refreshed:
                    raise
                log(f"{series}: download failed with an index "
                    f"{apt.index_age() / 3600:.1f} h old; refreshing it")
                apt.update()
                packages = resolve_packages(apt)
                for k in cached:
                    if k.packages == packages:
                        return k
                return _fetch(series, apt, root, packages)
        except (FetchError, subprocess.CalledProcessError, OSError) as e:
            if cached:
                log(f"WARNING: {series}: {e}\nWARNING: {series}: falling back to "
                    f"cached {cached[0].release} ({cached[0].tree})")
                return cached[0]
            raise FetchError(f"{series}: {e}") from e
