#!/usr/bin/env python3
"""Feed mutated .bpf.o files to pytracers.open() in child processes.

Every input must either open or be rejected with a PytracersError.  A child
killed by a signal (libelf/libbpf crashing on a file our checks let through)
is a crash; an exception of any other class is a failure; an input that takes
longer than --timeout seconds is a hang.

Inputs are derived deterministically from (--seed, index), so a crash found at
index i is reproduced with ``--start i --count 1``.  Crashing inputs are saved
under --save (default: a temporary directory, printed at the end).

    python3 scripts/fuzz_open.py --count 10000 --jobs 2
    python3 scripts/fuzz_open.py --count 300 --seed 7 --load   # also load() what opens

Mutations are structure-aware: besides bit flips, byte stores, truncation and
chunk moves, they rewrite fields of the ELF header, of section headers, of
symbols and relocations, and of the .BTF / .BTF.ext headers and type records,
with boundary values (0, 1, -1, size +- 1, 2**31, ...), so libbpf's parsers are
reached past the first sanity check.

Output: one summary line per category and the final line
``fuzz: N inputs, C crashes, F failures, H hangs`` (exit status 1 unless all
three are zero).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_CORPUS = os.path.join(REPO, "pytracers", "bpf")

INTERESTING = (0, 1, 2, 3, 4, 7, 8, 16, 24, 32, 63, 64, 127, 128, 255, 256, 0x7fff, 0x8000,
               0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000,
               0x7fffffffffffffff, 0x8000000000000000, 0xffffffffffffffff)


# ---- ELF layout (64-bit little-endian only: that is what we mutate) -----------
class Layout:
    """Offsets of the fields worth mutating in one ELF64 LE object."""

    def __init__(self, data: bytes) -> None:
        # (offset, size) of integer fields, tagged by where they live
        self.fields: List[Tuple[str, int, int]] = []
        self.sections: List[Tuple[str, int, int, int]] = []  # name, type, offset, size
        try:
            self._parse(data)
        except (struct.error, IndexError, ValueError):
            pass
        self.by_group: Dict[str, List[Tuple[str, int, int]]] = {}
        for f in self.fields:
            self.by_group.setdefault(f[0].split(".")[0], []).append(f)
        self.groups = sorted(self.by_group)

    def _parse(self, d: bytes) -> None:
        ehdr = [("e_type", 16, 2), ("e_machine", 18, 2), ("e_version", 20, 4),
                ("e_entry", 24, 8), ("e_phoff", 32, 8), ("e_shoff", 40, 8), ("e_flags", 48, 4),
                ("e_ehsize", 52, 2), ("e_phentsize", 54, 2), ("e_phnum", 56, 2),
                ("e_shentsize", 58, 2), ("e_shnum", 60, 2), ("e_shstrndx", 62, 2)]
        for name, off, size in ehdr:
            self.fields.append(("ehdr." + name, off, size))
        for i, name in enumerate(("EI_CLASS", "EI_DATA", "EI_VERSION", "EI_OSABI")):
            self.fields.append(("ident." + name, 4 + i, 1))
        shoff, = struct.unpack_from("<Q", d, 40)
        shnum, shstrndx = struct.unpack_from("<HH", d, 60)
        shdrs = []
        for i in range(shnum):
            base = shoff + 64 * i
            name, typ, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
                "<IIQQQQIIQQ", d, base)
            shdrs.append((name, typ, off, size, link, entsize))
            for fname, foff, fsize in (("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8),
                                       ("sh_offset", 24, 8), ("sh_size", 32, 8),
                                       ("sh_link", 40, 4), ("sh_info", 44, 4),
                                       ("sh_addralign", 48, 8), ("sh_entsize", 56, 8)):
                self.fields.append((f"shdr.{fname}", base + foff, fsize))
        stroff = shdrs[shstrndx][2]
        for name, typ, off, size, link, entsize in shdrs:
            end = d.index(b"\0", stroff + name)
            sname = d[stroff + name:end].decode("latin-1")
            self.sections.append((sname, typ, off, size))
            if typ == 2:  # SHT_SYMTAB
                for s in range(off, off + size, 24):
                    for fname, foff, fsize in (("st_name", 0, 4), ("st_info", 4, 1),
                                               ("st_other", 5, 1), ("st_shndx", 6, 2),
                                               ("st_value", 8, 8), ("st_size", 16, 8)):
                        self.fields.append((f"sym.{fname}", s + foff, fsize))
            elif typ == 9:  # SHT_REL
                for r in range(off, off + size, 16):
                    self.fields.append(("rel.r_offset", r, 8))
                    self.fields.append(("rel.r_type", r + 8, 4))
                    self.fields.append(("rel.r_sym", r + 12, 4))
            elif sname == ".BTF" and size >= 24:
                hdr_len, = struct.unpack_from("<I", d, off + 4)
                for fname, foff, fsize in (("magic", 0, 2), ("version", 2, 1), ("flags", 3, 1),
                                           ("hdr_len", 4, 4), ("type_off", 8, 4),
                                           ("type_len", 12, 4), ("str_off", 16, 4),
                                           ("str_len", 20, 4)):
                    self.fields.append((f"btf.{fname}", off + foff, fsize))
                type_off, type_len = struct.unpack_from("<II", d, off + 8)
                start = off + hdr_len + type_off
                # every u32 word of the type section: name_off, info, size/type, members...
                for w in range(start, min(start + type_len, off + size), 4):
                    self.fields.append(("btf.type_word", w, 4))
            elif sname == ".BTF.ext" and size >= 32:
                hdr_len, = struct.unpack_from("<I", d, off + 4)
                for fname, foff, fsize in (("magic", 0, 2), ("hdr_len", 4, 4),
                                           ("func_info_off", 8, 4), ("func_info_len", 12, 4),
                                           ("line_info_off", 16, 4), ("line_info_len", 20, 4),
                                           ("core_relo_off", 24, 4), ("core_relo_len", 28, 4)):
                    self.fields.append((f"btf_ext.{fname}", off + foff, fsize))
                for w in range(off + hdr_len, off + size, 4):
                    self.fields.append(("btf_ext.word", w, 4))


def _set_int(buf: bytearray, off: int, size: int, value: int) -> None:
    if off + size <= len(buf):
        buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def mutate(seeds: List[Tuple[bytes, Layout]], rng: random.Random) -> Tuple[bytes, str]:
    """One mutated input and a short description of what was done."""
    data, lay = seeds[rng.randrange(len(seeds))]
    buf = bytearray(data)
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
        op = rng.choice(("field", "field", "field", "field", "bitflip", "byte", "chunk",
                         "truncate", "splice", "zero_section"))
        if op == "field" and lay.fields:
            # pick the part of the file first, so the many BTF words do not
            # crowd out the few header fields
            group = rng.choice(lay.groups)
            name, off, size = rng.choice(lay.by_group[group])
            cur = int.from_bytes(buf[off:off + size], "little") if off + size <= len(buf) else 0
            how = rng.randrange(4)
            if how == 0:
                v = rng.choice(INTERESTING)
            elif how == 1:
                v = cur + rng.choice((-8, -4, -2, -1, 1, 2, 4, 8, 16, 24))
            elif how == 2:
                v = cur ^ (1 << rng.randrange(8 * size))
            else:
                v = rng.getrandbits(8 * size)
            _set_int(buf, off, size, v)
            ops.append(f"{name}@{off:#x}={v & ((1 << (8 * size)) - 1):#x}")
        elif op == "bitflip" and buf:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(buf))
                buf[i] ^= 1 << rng.randrange(8)
            ops.append("bitflip")
        elif op == "byte" and buf:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(buf))
                buf[i] = rng.choice((0, 1, 0x7f, 0x80, 0xff, rng.randrange(256)))
            ops.append("byte")
        elif op == "chunk" and len(buf) > 16:
            a = rng.randrange(len(buf))
            n = rng.randint(1, min(256, len(buf) - a))
            b = rng.randrange(len(buf))
            if rng.random() < 0.5:
                buf[b:b + n] = buf[a:a + n]       # overwrite (length may change at the end)
                ops.append(f"copy {a:#x}+{n}->{b:#x}")
            else:
                del buf[a:a + n]
                ops.append(f"delete {a:#x}+{n}")
        elif op == "truncate" and buf:
            n = rng.randrange(len(buf))
            del buf[n:]
            ops.append(f"truncate {n}")
        elif op == "splice" and len(seeds) > 1 and lay.sections:
            other, olay = seeds[rng.randrange(len(seeds))]
            if olay.sections:
                _, _, so, ss = rng.choice(olay.sections)
                _, _, do, ds = rng.choice(lay.sections)
                chunk = other[so:so + min(ss, 4096)]
                buf[do:do + len(chunk)] = chunk
                ops.append(f"splice {len(chunk)}@{do:#x}")
        elif op == "zero_section" and lay.sections:
            name, _, off, size = rng.choice(lay.sections)
            buf[off:off + min(size, 1 << 16)] = bytes(min(size, 1 << 16, max(0, len(buf) - off)))
            ops.append(f"zero {name}")
    return bytes(buf), ",".join(ops)


def load_seeds(corpus: List[str]) -> List[Tuple[bytes, Layout]]:
    files: List[str] = []
    for c in corpus:
        if os.path.isdir(c):
            files += sorted(os.path.join(c, n) for n in os.listdir(c) if n.endswith(".bpf.o"))
        else:
            files.append(c)
    seeds = []
    for f in files:
        with open(f, "rb") as fh:
            d = fh.read()
        seeds.append((d, Layout(d)))
    if not seeds:
        raise SystemExit(f"no .bpf.o files in {corpus}")
    return seeds


def make_input(seeds: List[Tuple[bytes, Layout]], seed: int, index: int) -> Tuple[bytes, str]:
    return mutate(seeds, random.Random(seed * 1_000_003 + index))


# ---- the child: open each input, report one line per input ----------------------
def child_main(args: argparse.Namespace) -> None:
    import pytracers
    from pytracers.errors import PytracersError
    seeds = load_seeds(args.corpus)
    workdir = tempfile.mkdtemp(prefix="pt-fuzz-")
    os.chmod(workdir, 0o700)
    path = os.path.join(workdir, "input.bpf.o")
    out = sys.stdout
    try:
        for i in range(args.start, args.start + args.count):
            data, _ = make_input(seeds, args.seed, i)
            with open(path, "wb") as f:
                f.write(data)
            out.write(f"start {i}\n")
            out.flush()
            try:
                obj = pytracers.open(path)
                try:
                    if args.load:
                        try:
                            obj.load().close()
                            res = "loaded"
                        except PytracersError as e:
                            res = "load-rejected " + type(e).__name__
                    else:
                        res = "opened"
                finally:
                    obj.close()
            except PytracersError as e:
                res = "rejected " + type(e).__name__
                if args.verbose:
                    res += " " + json.dumps(str(e)[:200])
            except Exception as e:  # noqa: BLE001 - the point is to find these
                res = "FAILURE " + json.dumps(f"{type(e).__module__}.{type(e).__name__}: {e}"[:300])
            out.write(f"done {i} {res}\n")
            out.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the parent: spread the indices over workers, respawn after a crash --------
class Worker:
    def __init__(self, args: argparse.Namespace, start: int, end: int) -> None:
        self.args = args
        self.next = start
        self.end = end
        self.proc: Optional[subprocess.Popen] = None
        self.current: Optional[int] = None
        self.started_at = 0.0
        self.buf = b""

    def spawn(self) -> None:
        a = self.args
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seed", str(a.seed),
               "--start", str(self.next), "--count", str(self.end - self.next)]
        if a.load:
            cmd.append("--load")
        if a.verbose:
            cmd.append("--verbose")
        for c in a.corpus:
            cmd += ["--corpus", c]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        self.current = None
        self.buf = b""
        self.started_at = time.monotonic()

    @property
    def done(self) -> bool:
        return self.proc is None and self.next >= self.end


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    # Children regenerate inputs from the seeds: freeze them for the whole run
    # (the shipped objects may be rebuilt meanwhile).
    frozen = tempfile.mkdtemp(prefix="pt-fuzz-corpus-")
    for k, (d, _) in enumerate(load_seeds(args.corpus)):
        with open(os.path.join(frozen, f"seed{k:03d}.bpf.o"), "wb") as f:
            f.write(d)
    args.corpus = [frozen]
    try:
        return _run(args, t0)
    finally:
        shutil.rmtree(frozen, ignore_errors=True)


def _run(args: argparse.Namespace, t0: float) -> int:
    seeds = load_seeds(args.corpus)
    save = args.save or tempfile.mkdtemp(prefix="pt-fuzz-crashes-")
    os.makedirs(save, exist_ok=True)
    jobs = max(1, min(args.jobs, args.count))
    per = (args.count + jobs - 1) // jobs
    workers = []
    for j in range(jobs):
        s = args.start + j * per
        e = min(args.start + args.count, s + per)
        if s < e:
            workers.append(Worker(args, s, e))
    for w in workers:
        w.spawn()
    results: collections.Counter = collections.Counter()
    crashes: List[Tuple[int, str, str]] = []
    failures: List[Tuple[int, str]] = []
    hangs: List[int] = []
    total = 0

    def record_bad(w: Worker, kind: str, detail: str) -> None:
        assert w.current is not None
        data, desc = make_input(seeds, args.seed, w.current)
        p = os.path.join(save, f"{kind}-seed{args.seed}-{w.current}.bpf.o")
        with open(p, "wb") as f:
            f.write(data)
        if kind == "crash":
            crashes.append((w.current, detail, desc))
        else:
            hangs.append(w.current)
        print(f"{kind.upper()} at index {w.current} ({detail}): {desc} -> {p}", flush=True)

    while any(not w.done for w in workers):
        live = {w.proc.stdout.fileno(): w for w in workers if w.proc is not None}  # type: ignore[union-attr]
        ready, _, _ = select.select(list(live), [], [], 0.5)
        for fd in ready:
            w = live[fd]
            chunk = os.read(fd, 65536)
            if chunk:
                w.buf += chunk
                *lines, w.buf = w.buf.split(b"\n")
                for line in lines:
                    parts = line.decode().split(" ", 2)
                    if parts[0] == "start":
                        w.current = int(parts[1])
                        w.started_at = time.monotonic()
                    elif parts[0] == "done":
                        total += 1
                        res = parts[2]
                        key = res.split(" ")[0] + (" " + res.split(" ")[1]
                                                   if res.startswith(("rejected", "load-")) else "")
                        results[key] += 1
                        if res.startswith("FAILURE"):
                            failures.append((int(parts[1]), res))
                            print(f"FAILURE at index {parts[1]}: {res}", flush=True)
                        elif args.verbose:
                            print(f"{parts[1]}: {res}")
                        w.current = None
                        w.next = int(parts[1]) + 1
                continue
            # EOF: the child exited
            assert w.proc is not None
            rc = w.proc.wait()
            w.proc = None
            if w.current is not None:          # it died inside an input
                total += 1
                if rc < 0:
                    record_bad(w, "crash", f"signal {-rc}")
                else:
                    record_bad(w, "crash", f"exit status {rc} mid-input")
                w.next = w.current + 1
            elif rc != 0 and w.next < w.end:
                print(f"worker exited with status {rc} between inputs at {w.next}", flush=True)
                failures.append((w.next, f"worker exit {rc}"))
                w.next += 1
            if w.next < w.end:
                w.spawn()
        now = time.monotonic()
        for w in workers:
            if w.proc is not None and w.current is not None and now - w.started_at > args.timeout:
                w.proc.kill()
                w.proc.wait()
                w.proc.stdout.close()  # type: ignore[union-attr]
                w.proc = None
                total += 1
                record_bad(w, "hang", f"> {args.timeout}s")
                w.next = w.current + 1
                if w.next < w.end:
                    w.spawn()
    dt = time.monotonic() - t0
    for key, n in sorted(results.items()):
        print(f"  {n:6d} {key}")
    print(f"fuzz: {total} inputs, {len(crashes)} crashes, {len(failures)} failures, "
          f"{len(hangs)} hangs in {dt:.1f}s (seed {args.seed}, jobs {jobs}"
          f"{', load' if args.load else ''})")
    if crashes or hangs:
        print(f"saved inputs: {save}")
    elif not args.save:
        shutil.rmtree(save, ignore_errors=True)
    return 1 if (crashes or failures or hangs) else 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--corpus", action="append", default=None,
                    help="seed .bpf.o files or directories (default: pytracers/bpf)")
    ap.add_argument("--load", action="store_true", help="also load() inputs that open")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per input before it counts as a hang (default 30, or 120 "
                         "with --load: a mutated object can keep the kernel's verifier busy "
                         "for tens of seconds)")
    ap.add_argument("--save", help="directory for crashing inputs")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.corpus = args.corpus or [DEFAULT_CORPUS]
    if args.timeout is None:
        args.timeout = 120.0 if args.load else 30.0
    if args.child:
        child_main(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
