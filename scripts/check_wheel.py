#!/usr/bin/env python3
"""Build the wheel and check what a user gets.

- The wheel is pure (py3-none-any): installing it compiles nothing.
- It carries the objects of every architecture pytracers is built for
  (x86-64's in pytracers/bpf/, arm64's in pytracers/bpf/arm64/; the loader
  picks the running machine's), the same set for each.
- It ships one object per probe-kind family, each an eBPF ELF (EM_BPF) with
  .BTF and .BTF.ext sections (i.e. a CO-RE object), and besides them only
  the feature probes and the BPF_PROG_TEST_RUN ring producers: no other
  object, no file outside the package, and none of the benchmark's own
  programs (bench/*.bpf.o) in any shipped object.
- It installs into a fresh venv with no compiler reachable (CC/CXX point at
  /bin/false and PATH holds only the venv's bin and coreutils), and the
  installed package opens every shipped object.

Run by scripts/test; usage: .venv/bin/python scripts/check_wheel.py
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parent.parent
# probe-kind family -> shipped object
FAMILIES = {
    "tp": "exec", "tp (any tracepoint)": "tracepoint",
    "raw_tp/tp/tp_btf syscalls": "syscalls", "tp_btf": "proc",
    "kprobe/kretprobe": "kprobe", "fentry/fexit": "fentry", "fmod_ret": "fmod_ret",
    "uprobe/uretprobe": "uprobe", "usdt": "usdt", "perf_event (profiler)": "profile",
    "tp_btf (off-CPU)": "offcpu",
}
# the other shipped objects
OTHERS = {
    "features": "the feature probes (pytracers.features)",
    "bench": "ring producers run with BPF_PROG_TEST_RUN (tests, the pytest-plugin "
             "example, bench/run's drain)",
}
# where each architecture's objects are in the package (pytracers._shipped)
ARCH_DIRS = {"x86-64": "pytracers/bpf/", "arm64": "pytracers/bpf/arm64/"}
SHIPPED = {f"{d}{name}.bpf.o" for d in ARCH_DIRS.values()
           for name in [*FAMILIES.values(), *OTHERS]}


def programs(data: bytes) -> set[str]:
    """The programs of an eBPF object: global functions outside .text."""
    elf = ELFFile(io.BytesIO(data))
    names = [s.name for s in elf.iter_sections()]
    symtab = elf.get_section_by_name(".symtab")
    out = set()
    for sym in symtab.iter_symbols():
        shndx = sym["st_shndx"]
        if (sym["st_info"]["type"] == "STT_FUNC" and sym["st_info"]["bind"] == "STB_GLOBAL"
                and isinstance(shndx, int) and 0 < shndx < len(names)
                and names[shndx] != ".text"):
            out.add(sym.name)
    return out


def main() -> int:
    problems = []
    with tempfile.TemporaryDirectory(prefix="pytracers-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp,
                        str(ROOT)], check=True)
        wheels = list(Path(tmp).glob("pytracers-*.whl"))
        assert len(wheels) == 1, wheels
        whl = wheels[0]
        print("built", whl.name)
        if not whl.name.endswith("-py3-none-any.whl"):
            problems.append(f"wheel is not pure Python: {whl.name}")
        with zipfile.ZipFile(whl) as z:
            names = set(z.namelist())
            for (family, obj), (arch, d) in ((f, a) for a in ARCH_DIRS.items()
                                             for f in FAMILIES.items()):
                member = f"{d}{obj}.bpf.o"
                family = f"{family} ({arch})"
                if member not in names:
                    problems.append(f"{family}: {member} missing from the wheel")
                    continue
                elf = ELFFile(io.BytesIO(z.read(member)))
                secs = {s.name for s in elf.iter_sections()}
                ok = elf["e_machine"] == "EM_BPF" and {".BTF", ".BTF.ext"} <= secs
                print(f"  {family:36} {member:38} EM_BPF={elf['e_machine'] == 'EM_BPF'} "
                      f".BTF={'.BTF' in secs} .BTF.ext={'.BTF.ext' in secs}")
                if not ok:
                    problems.append(f"{member} is not an eBPF CO-RE object")
            if "pytracers/py.typed" not in names:
                problems.append("py.typed missing from the wheel")
            objects = {n for n in names if n.endswith(".bpf.o")}
            for extra in sorted(objects - SHIPPED):
                problems.append(f"{extra} is in the wheel but is not a product object")
            for (name, why), d in ((o, d) for d in ARCH_DIRS.values() for o in OTHERS.items()):
                if f"{d}{name}.bpf.o" not in names:
                    problems.append(f"{d}{name}.bpf.o ({why}) missing from the wheel")
            dist_info = whl.name.split("-py3-")[0] + ".dist-info/"
            for n in sorted(names):
                if not n.startswith(("pytracers/", dist_info)):
                    problems.append(f"{n} is in the wheel but outside the package")
            bench_progs: dict[str, str] = {}
            for obj in sorted((ROOT / "bench").glob("**/*.bpf.o")):
                bench_progs.update(dict.fromkeys(programs(obj.read_bytes()), obj.name))
            if not bench_progs:
                problems.append("no bench/*.bpf.o to compare with (run `python build.py`)")
            for member in sorted(objects):
                for prog in sorted(programs(z.read(member)) & set(bench_progs)):
                    problems.append(f"{member} ships {prog}, a program of the benchmark's "
                                    f"bench/{bench_progs[prog]}")
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = dict(os.environ, CC="/bin/false", CXX="/bin/false",
                   PATH=str(venv / "bin"))
        env.pop("VIRTUAL_ENV", None)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--only-binary", ":all:", str(whl)], check=True, env=env)
        code = ("import pytracers, glob, os\n"
                "from pytracers import _shipped\n"
                "objs = sorted(p for m in ('x86_64', 'aarch64')\n"
                "              for p in glob.glob(os.path.join(_shipped.objects_dir(m), '*.bpf.o')))\n"
                "for p in objs:\n"
                "    pytracers.open(p).close()\n"
                "print('installed wheel opened', len(objs), 'objects')\n")
        subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, env=env,
                       cwd=tmp)
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
