#!/usr/bin/env python3
"""Build the precompiled CO-RE objects that pytracers ships.

Run once by the maintainers (and by CI, which checks the result), never on a
user's machine: a user installs the committed ``pytracers/bpf/*.bpf.o`` files
and needs no clang, no kernel headers and no bpftool.  The benchmark's own
objects (``bench/*.bpf.c``, which may include the headers of ``bpf_src/``) are
built the same way into ``bench/`` and committed too, but are not shipped.

    python build.py               # compile bpf_src/*.bpf.c -> pytracers/bpf/*.bpf.o and
                                  # bench/*.bpf.c -> bench/*.bpf.o, then write
                                  # pytracers/_libbpf_ffi.py and elf/_inspected.py
    python build.py --check       # rebuild in a temp dir; exit 1 if anything differs
    python build.py vmlinux       # regenerate vmlinux/x86/vmlinux.h from this kernel's BTF
    python build.py vmlinux --arch arm64
                                  # regenerate vmlinux/arm64/vmlinux.h from the BTF cut out
                                  # of Debian's arm64 kernel Image (fetched and cached as
                                  # scripts/vmtest fetches its kernels; no boot needed)

Every source is built once per architecture (ARCHES): against its own
``vmlinux/<arch>/vmlinux.h`` with ``-D__TARGET_ARCH_<arch>`` (libbpf's
PT_REGS_*, BPF_KPROBE and BPF_KSYSCALL then read that architecture's
registers).  x86-64's objects are at the top of each output directory
(``pytracers/bpf/X.bpf.o``), the others in a subdirectory named for the
architecture (``pytracers/bpf/arm64/X.bpf.o``); ``pytracers._shipped`` picks
the running machine's.

Each object is compiled with a pinned clang (Debian's clang-19) from a copy of
the sources at one fixed path and then passed through ``bpftool gen object``,
which links it and drops the DWARF sections (keeping ``.BTF`` and
``.BTF.ext``), so the output depends only on the source, the compiler and the
committed vmlinux.h -- not on where the repository is checked out.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import filecmp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "bpf_src"
OUT = ROOT / "pytracers" / "bpf"
# (source directory, output directory), relative to the root: the objects
# pytracers ships, the benchmark's own (bench/run loads them from bench/) and
# the tests' (objects written the way users' tools are, never shipped)
TARGETS = (("bpf_src", "pytracers/bpf"), ("bench", "bench"), ("tests/objects", "tests/objects"))
VMLINUX_DIR = ROOT / "vmlinux" / "x86"


class Arch:
    """One architecture the objects are built for."""

    def __init__(self, name: str, subdir: str, machines: tuple, debian: str):
        self.name = name          # libbpf's __TARGET_ARCH_<name>, vmlinux/<name>/
        self.subdir = subdir      # where its objects go inside each output dir
        self.machines = machines  # os.uname().machine values it serves
        self.debian = debian      # Debian's architecture name (kernel packages)

    @property
    def vmlinux_dir(self) -> Path:
        return ROOT / "vmlinux" / self.name

    def out_dir(self, root: Path, out_rel: str) -> Path:
        return (root / out_rel / self.subdir).resolve()


# pytracers/_shipped.py holds the same machine -> subdirectory table
ARCHES = {
    "x86": Arch("x86", "", ("x86_64",), "amd64"),
    "arm64": Arch("arm64", "arm64", ("aarch64",), "arm64"),
}
CLANG = os.environ.get("CLANG", "clang-19")
BPFTOOL = os.environ.get("BPFTOOL", "bpftool")
LIBBPF_INCLUDE = Path("/usr/include")  # bpf/bpf_helpers.h etc. from libbpf-dev

CFLAGS = [
    "-g", "-O2", "-target", "bpf",             # + -D__TARGET_ARCH_<arch>
    "-Wall", "-Werror",
    # Paths must not leak into the object: build in a fixed relative layout.
    "-fdebug-prefix-map={root}=.",
    "-fno-ident",
]


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"build.py: {name} not found; install Debian's {package} "
                 f"(apt-get install {package})")
    return path


# clang's BTF output depends on the source directory's path (the order of
# some forward-declared types changed between clones at different paths), so
# every build compiles a copy of the sources at one fixed path, under a lock.
STAGE = Path(tempfile.gettempdir()) / "pytracers-bpf-build"


@contextlib.contextmanager
def staged_sources() -> Iterator[Path]:
    STAGE.parent.mkdir(parents=True, exist_ok=True)
    with open(str(STAGE) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(STAGE, ignore_errors=True)
        (STAGE / "obj").mkdir(parents=True)
        shutil.copytree(SRC, STAGE / "bpf_src")
        for src_dir, _ in TARGETS:
            if src_dir != "bpf_src":
                (STAGE / src_dir).mkdir(parents=True)
                for src in sorted((ROOT / src_dir).glob("*.bpf.c")):
                    shutil.copy(src, STAGE / src_dir / src.name)
        for arch in ARCHES.values():
            shutil.copytree(arch.vmlinux_dir, STAGE / "vmlinux" / arch.name)
        try:
            yield STAGE
        finally:
            shutil.rmtree(STAGE, ignore_errors=True)


NO_ASLR = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []


def compile_one(stage: Path, src: str, out_dir: Path, clang: str, bpftool: str,
                arch: Arch = ARCHES["x86"]) -> Path:
    """Compile ``src`` (a path relative to the stage, e.g. bpf_src/foo.bpf.c)
    for ``arch`` into ``out_dir`` (foo.bpf.o)."""
    name = Path(src).name[: -len(".c")] + ".o"    # foo.bpf.c -> foo.bpf.o
    out = out_dir / name
    raw = f"obj/{arch.name}/{Path(src).parent}/{name}"
    (stage / raw).parent.mkdir(parents=True, exist_ok=True)
    flags = [f.format(root=stage) for f in CFLAGS] + [f"-D__TARGET_ARCH_{arch.name}"]
    # clang's BTF type order for some forward declarations depends on where
    # its heap lands (seen with the arm64 vmlinux.h: 1 build in 12 differed):
    # address-space randomisation off for the compiler makes it one output.
    run([*NO_ASLR, clang, *flags, "-I", f"vmlinux/{arch.name}", "-I", "bpf_src",
         "-idirafter", str(LIBBPF_INCLUDE),
         "-c", src, "-o", raw], cwd=stage)
    run([bpftool, "gen", "object", str(out), str(stage / raw)], stdout=subprocess.DEVNULL)
    return out


def build(root: Path) -> list[Path]:
    """Compile every target's sources for every architecture into ``root`` /
    its output directory (/ the architecture's subdirectory)."""
    clang = tool(CLANG, "clang-19")
    bpftool = tool(BPFTOOL, "bpftool")
    for arch in ARCHES.values():
        if not (arch.vmlinux_dir / "vmlinux.h").exists():
            sys.exit(f"build.py: vmlinux/{arch.name}/vmlinux.h is missing; "
                     f"run `python build.py vmlinux --arch {arch.name}`")
    built = []
    with staged_sources() as stage:
        for arch in ARCHES.values():
            for src_dir, out_rel in TARGETS:
                out_dir = arch.out_dir(root, out_rel)
                out_dir.mkdir(parents=True, exist_ok=True)
                built += [compile_one(stage, f"{src_dir}/{src.name}", out_dir, clang, bpftool,
                                      arch)
                          for src in sorted((ROOT / src_dir).glob("*.bpf.c"))]
    return built


def committed_objects(root: Path) -> list[Path]:
    """The objects of every target and architecture under ``root``."""
    return [p for arch in ARCHES.values() for _, out_rel in TARGETS
            for p in sorted(arch.out_dir(root, out_rel).glob("*.bpf.o"))]


FFI_MODULE = ROOT / "pytracers" / "_libbpf_ffi.py"


def _binding():
    """pytracers/_libbpf.py loaded on its own (not the whole package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_pytracers_binding",
                                                  ROOT / "pytracers" / "_libbpf.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gen_ffi_module() -> Path:
    """cffi's out-of-line ABI module for the binding (pure Python, pre-parsed)."""
    _binding().generate_ffi_module(str(FFI_MODULE))
    return FFI_MODULE


def check_ffi_module() -> bool:
    """True when the committed _libbpf_ffi.py was generated from the current
    declarations (compared by digest, since the exact text depends on the
    cffi version that wrote it)."""
    want = _binding().cdef_digest()
    have = None
    if FFI_MODULE.exists():
        for line in FFI_MODULE.read_text().splitlines():
            if line.startswith("CDEF_DIGEST = "):
                have = line.split("=", 1)[1].strip().strip("'\"")
    if have != want:
        print(f"build.py --check: {FFI_MODULE.relative_to(ROOT)} is stale "
              "(run `python build.py` and commit)")
        return False
    return True


INSPECTED_MODULE = ROOT / "pytracers" / "elf" / "_inspected.py"


def _elf_inspect():
    """pytracers.elf.inspect of this tree (the packages' __init__ import nothing heavy)."""
    sys.path.insert(0, str(ROOT))
    try:
        import pytracers.elf.inspect as elf_inspect
    finally:
        sys.path.remove(str(ROOT))
    if Path(elf_inspect.__file__).resolve().parent != ROOT / "pytracers" / "elf":
        sys.exit(f"build.py: imported {elf_inspect.__file__}, not this tree's pytracers")
    return elf_inspect


def inspected_text() -> str:
    """pytracers/elf/_inspected.py for the objects now in pytracers/bpf/: the
    full inspection (elf/validate.py's checks, then pyelftools) of each, keyed
    by the SHA-256 of its contents and stamped with the checking code's digest."""
    import hashlib
    elf_inspect = _elf_inspect()
    lines = [
        "# generated by build.py: pytracers.elf.inspect's full inspection of each shipped",
        "# object; do not edit.  Used only for a file whose SHA-256 is a key here, and only",
        "# while VALIDATOR_DIGEST matches the checking code (see inspect._prevalidated).",
        "from __future__ import annotations",
        "",
        "TYPE_CHECKING = False",
        "if TYPE_CHECKING:",
        "    from typing import Any",
        "",
        f"FORMAT = {elf_inspect.INSPECTED_FORMAT!r}",
        f"VALIDATOR_DIGEST = {elf_inspect.validator_digest()!r}",
        "OBJECTS: dict[str, dict[str, Any]] = {",
    ]
    for arch in ARCHES.values():
        for obj in sorted(arch.out_dir(ROOT, "pytracers/bpf").glob("*.bpf.o")):
            lines += _inspected_entry(elf_inspect, obj, hashlib)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _inspected_entry(elf_inspect, obj: Path, hashlib) -> list[str]:
    lines = []
    if True:
        data = obj.read_bytes()
        rel = obj.relative_to(ROOT)
        rec = elf_inspect.inspection_record(str(rel), data)
        lines.append(f"    # {rel.relative_to('pytracers/bpf')}")
        lines.append(f"    {hashlib.sha256(data).hexdigest()!r}: {{")
        for key, value in rec.items():
            if isinstance(value, dict) and value:
                lines.append(f"        {key!r}: {{")
                lines += [f"            {k!r}: {v!r}," for k, v in value.items()]
                lines.append("        },")
            else:
                lines.append(f"        {key!r}: {value!r},")
        lines.append("    },")
    return lines


def gen_inspected_module() -> Path:
    INSPECTED_MODULE.write_text(inspected_text())
    return INSPECTED_MODULE


def check_inspected_module() -> bool:
    """True when the committed _inspected.py is what the current checking code
    says about the committed objects."""
    have = INSPECTED_MODULE.read_text() if INSPECTED_MODULE.exists() else None
    if have != inspected_text():
        print(f"build.py --check: {INSPECTED_MODULE.relative_to(ROOT)} is stale "
              "(run `python build.py` and commit)")
        return False
    return True


def check() -> int:
    """Rebuild into a temporary directory and compare with the committed objects."""
    if not check_ffi_module() or not check_inspected_module():
        return 1
    with tempfile.TemporaryDirectory(prefix="pytracers-check-") as tmp:
        built = build(Path(tmp))
        fresh = {str(p.relative_to(Path(tmp).resolve())) for p in built}
        committed = {str(p.relative_to(ROOT)) for p in committed_objects(ROOT)}
        bad = sorted(committed ^ fresh)
        bad += [n for n in sorted(fresh & committed)
                if not filecmp.cmp(Path(tmp) / n, ROOT / n, shallow=False)]
    if bad:
        print("build.py --check: these objects differ from a fresh build "
              "(run `python build.py` and commit):", *bad, sep="\n  ")
        return 1
    counts = ", ".join(f"{sum(1 for n in fresh if _arch_of(n) is a)} {a.name}"
                       for a in ARCHES.values())
    print(f"build.py --check: {len(fresh)} objects ({counts}) match a fresh build")
    return 0


def _arch_of(rel: str) -> Arch:
    parent = Path(rel).parent.name
    return next((a for a in ARCHES.values() if a.subdir and a.subdir == parent), ARCHES["x86"])


def gen_vmlinux(btf: str) -> None:
    bpftool = tool(BPFTOOL, "bpftool")
    VMLINUX_DIR.mkdir(parents=True, exist_ok=True)
    header = subprocess.run([bpftool, "btf", "dump", "file", btf, "format", "c"],
                            check=True, capture_output=True).stdout
    (VMLINUX_DIR / "vmlinux.h").write_bytes(header)
    (VMLINUX_DIR / "SOURCE.txt").write_text(
        "vmlinux.h was generated by `python build.py vmlinux` with\n"
        f"`bpftool btf dump file {btf} format c` on kernel {platform.release()}\n"
        f"({platform.machine()}). CO-RE relocations adapt the compiled objects to\n"
        "other kernels at load time, so this header is not regenerated per kernel.\n")
    print(f"wrote {VMLINUX_DIR / 'vmlinux.h'} ({len(header)} bytes) from {btf}")


BTF_MAGIC = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"   # magic 0xeB9F, version 1, flags 0, hdr_len 24


def cut_btf(image: bytes) -> bytes:
    """The kernel's BTF out of its uncompressed Image: the .BTF section lies in
    it as is (between __start_BTF and __stop_BTF), a 24-byte header followed by
    the types and then the strings.  The largest well-formed candidate wins
    (it is byte-identical to the booted kernel's /sys/kernel/btf/vmlinux)."""
    import struct
    best = (0, 0)
    at = image.find(BTF_MAGIC)
    while at >= 0:
        _, type_off, type_len, str_off, str_len = struct.unpack_from("<5I", image, at + 4)
        size = 24 + str_off + str_len
        if type_off == 0 and str_off == type_len and at + size <= len(image) and size > best[1]:
            best = (at, size)
        at = image.find(BTF_MAGIC, at + 1)
    if not best[1]:
        sys.exit("build.py: no BTF found in the kernel image (CONFIG_DEBUG_INFO_BTF off?)")
    return image[best[0]:best[0] + best[1]]


def gen_vmlinux_from_package(arch: Arch, series: str, image: str | None) -> None:
    """vmlinux/<arch>/vmlinux.h from the BTF inside Debian's kernel Image for
    ``arch`` (``series`` as scripts/vmtest names it), or from ``image``."""
    import gzip
    if image is None:
        sys.path.insert(0, str(ROOT / "scripts" / "_vmtest"))
        try:
            import kernels  # scripts/_vmtest/kernels.py: Debian packages, cached
        finally:
            sys.path.pop(0)
        k = kernels.get_kernel(series, arch=arch.debian)
        image, source = str(k.vmlinuz), f"Debian's {k.release} ({', '.join(sorted(k.packages))})"
    else:
        source = image
    data = Path(image).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    btf = cut_btf(data)
    bpftool = tool(BPFTOOL, "bpftool")
    with tempfile.NamedTemporaryFile(prefix="pytracers-btf-") as f:
        f.write(btf)
        f.flush()
        header = subprocess.run([bpftool, "btf", "dump", "file", f.name, "format", "c"],
                                check=True, capture_output=True).stdout
    arch.vmlinux_dir.mkdir(parents=True, exist_ok=True)
    (arch.vmlinux_dir / "vmlinux.h").write_bytes(header)
    (arch.vmlinux_dir / "SOURCE.txt").write_text(
        f"vmlinux.h was generated by `python build.py vmlinux --arch {arch.name}` from the\n"
        f"BTF ({len(btf)} bytes) cut out of the kernel Image of {source}\n"
        "with `bpftool btf dump file BTF format c`.  CO-RE relocations adapt the\n"
        "compiled objects to other kernels at load time, so this header is not\n"
        "regenerated per kernel.\n")
    print(f"wrote {arch.vmlinux_dir / 'vmlinux.h'} ({len(header)} bytes) from {source}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["objects", "vmlinux"], default="objects")
    ap.add_argument("--check", action="store_true",
                    help="rebuild in a temp dir and fail if the committed objects differ")
    ap.add_argument("--btf", default="/sys/kernel/btf/vmlinux",
                    help="BTF to generate vmlinux.h from (with `vmlinux`)")
    ap.add_argument("--arch", choices=sorted(ARCHES), default="x86",
                    help="with `vmlinux`: the architecture (x86: this machine's BTF; "
                         "others: the BTF of Debian's kernel Image)")
    ap.add_argument("--series", default="6.12",
                    help="with `vmlinux --arch arm64`: the Debian kernel series (default 6.12; 7.2's BTF "
                         "has anonymous members of named types that bookworm's bpftool dumps as "
                         "declarations clang rejects)")
    ap.add_argument("--image", help="with `vmlinux --arch arm64`: a kernel Image instead")
    args = ap.parse_args()
    if args.what == "vmlinux":
        if args.arch == "x86":
            gen_vmlinux(args.btf)
        else:
            gen_vmlinux_from_package(ARCHES[args.arch], args.series, args.image)
        return 0
    if args.check:
        return check()
    try:
        built = build(ROOT)
    except subprocess.CalledProcessError as e:
        print(f"build.py: {e.cmd[0]} failed with exit status {e.returncode}", file=sys.stderr)
        return 1
    built.append(gen_ffi_module())
    built.append(gen_inspected_module())
    for p in built:
        print("built", p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
