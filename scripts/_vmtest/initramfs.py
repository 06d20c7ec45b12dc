"""Build the guest's initramfs: static busybox, our /init, and the modules
the guest needs to reach the host's root file system (virtio, 9p, overlay).

Modules are taken from the unpacked Debian kernel, decompressed here on the
host (.ko.xz / .ko.zst / .ko.gz), and listed in /modules/order in dependency
order, which /init loads with busybox's insmod.  Dependencies come from each
module's ``.modinfo`` section (``depends=``), read with pyelftools.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Set

from elftools.elf.elffile import ELFFile

from kernels import Kernel

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init"

# Modules the guest needs, in the order we want them considered.  Built-in
# ones are skipped.  Optional ones are skipped when the kernel lacks them.
REQUIRED_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]
OPTIONAL_MODULES = ["virtio_rng"]


class InitramfsError(RuntimeError):
    pass


def _norm(name: str) -> str:
    """Module name as the kernel spells it: dashes become underscores."""
    return name.replace("-", "_")


def _module_name(path: str) -> str:
    base = os.path.basename(path)
    return _norm(base[: base.index(".ko")])


def _read_module(path: Path) -> bytes:
    """The plain ELF bytes of a module file, whatever its compression."""
    name = path.name
    if name.endswith(".ko"):
        return path.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        # No zstd in the standard library before 3.14; use the CLI.
        zstd = shutil.which("zstd")
        if not zstd:
            raise InitramfsError(f"{path} is zstd-compressed; install the zstd package")
        return subprocess.run([zstd, "-dcq", str(path)], check=True,
                              stdout=subprocess.PIPE).stdout
    raise InitramfsError(f"unknown module compression: {path}")


def modinfo(elf_bytes: bytes) -> Dict[str, List[str]]:
    """Key -> values of a module's .modinfo section (NUL-separated key=value)."""
    sec = ELFFile(io.BytesIO(elf_bytes)).get_section_by_name(".modinfo")
    info: Dict[str, List[str]] = {}
    if sec is None:
        return info
    for entry in sec.data().split(b"\0"):
        if b"=" in entry:
            k, v = entry.decode(errors="replace").split("=", 1)
            info.setdefault(k, []).append(v)
    return info


class ModuleSet:
    """The modules of one unpacked kernel, indexed by module name."""

    def __init__(self, kernel: Kernel):
        self.moddir = kernel.moddir
        self.files: Dict[str, Path] = {}
        for root, _dirs, files in os.walk(self.moddir / "kernel"):
            for f in files:
                if ".ko" in f:
                    self.files[_module_name(f)] = Path(root) / f
        self.builtin: Set[str] = set()
        builtin_list = self.moddir / "modules.builtin"
        if builtin_list.is_file():
            for line in builtin_list.read_text().splitlines():
                if line.strip():
                    self.builtin.add(_module_name(line.strip()))
        self._elf: Dict[str, bytes] = {}

    def elf(self, name: str) -> bytes:
        if name not in self._elf:
            self._elf[name] = _read_module(self.files[name])
        return self._elf[name]

    def load_order(self, required: List[str], optional: List[str]) -> List[str]:
        """Modules to insmod, each after everything it depends on."""
        order: List[str] = []
        visiting: Set[str] = set()

        def visit(name: str, needed: bool) -> None:
            name = _norm(name)
            if name in order or name in self.builtin:
                return
            if name not in self.files:
                if needed:
                    raise InitramfsError(f"module {name} is neither built in nor shipped "
                                         f"in {self.moddir}")
                return
            if name in visiting:
                raise InitramfsError(f"module dependency cycle at {name}")
            visiting.add(name)
            info = modinfo(self.elf(name))
            for dep in ",".join(info.get("depends", [])).split(","):
                if dep:
                    visit(dep, True)
            # "softdep=pre: a b post: c": load the pre ones first if present.
            for sd in info.get("softdep", []):
                words = sd.split()
                pre = words[words.index("pre:") + 1:] if "pre:" in words else []
                for w in pre:
                    if w.endswith(":"):
                        break
                    visit(w, False)
            visiting.discard(name)
            order.append(name)

        for m in required:
            visit(m, True)
        for m in optional:
            visit(m, False)
        return order


# ---------------------------------------------------------------------------
# newc cpio writer (what the kernel unpacks as an initramfs).
# ---------------------------------------------------------------------------

class Cpio:
    def __init__(self, out: io.BufferedWriter):
        self.out = out
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        namez = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(hdr + namez)
        self.out.write(b"\0" * (-(len(hdr) + len(namez)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> None:
        self._entry("TRAILER!!!", 0)


def find_static_busybox(root: Path = Path("/")) -> Optional[Path]:
    """A statically linked busybox of the root file system ``root``."""
    for cand in ("bin/busybox", "usr/bin/busybox"):
        p = root / cand
        if p.is_file():
            with open(p, "rb") as f:
                try:
                    elf = ELFFile(f)
                except Exception:
                    continue
                if not any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments()):
                    return p
    return None


def build_initramfs(kernel: Kernel, out_path: Path, root: Path = Path("/")) -> List[str]:
    """Write the initramfs for *kernel* to *out_path* (busybox from the
    guest's root file system ``root``); return the module order."""
    busybox = find_static_busybox(root)
    if busybox is None:
        raise InitramfsError("no statically linked busybox (apt-get install busybox-static)")
    mods = ModuleSet(kernel)
    order = mods.load_order(REQUIRED_MODULES, OPTIONAL_MODULES)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "wb") as f:
        c = Cpio(f)
        for d in ("bin", "dev", "proc", "sys", "mnt", "modules"):
            c.directory(d)
        c.file("bin/busybox", busybox.read_bytes(), 0o755)
        c.symlink("bin/sh", "busybox")
        c.file("init", INIT_SCRIPT.read_bytes(), 0o755)
        for name in order:
            c.file(f"modules/{name}.ko", mods.elf(name))
        c.file("modules/order", ("\n".join(order) + "\n").encode())
        c.finish()
    tmp.rename(out_path)
    return order
