"""Test programs of the user-space tests, built at test time with gcc from
tests/programs/*.c (frame pointers on, DWARF in), and a controlled child."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, List, Optional

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")
CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer"]


def build(out_dir: str, source: str, out: str, *extra: str) -> str:
    """Compile tests/programs/``source`` (several: comma-separated) into
    ``out_dir``/``out``."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc) to build the test programs")
    path = os.path.join(out_dir, out)
    sources = [os.path.join(HERE, s) for s in source.split(",")]
    libs = [e for e in extra if e.startswith("-l")]
    flags = [e for e in extra if not e.startswith("-l")]
    res = subprocess.run([gcc, *CFLAGS, *flags, "-o", path, *sources, *libs],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return path


class Child:
    """A test program waiting on stdin: ``go()`` lets it run one phase and
    returns its next line of output; the pipes are closed on exit."""

    def __init__(self, argv: List[str], **popen: Any) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, **popen)
        self.pid = self.proc.pid
        first = self.proc.stdout.readline()
        assert first == "ready\n", first

    def go(self) -> str:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def finish(self, timeout: float = 10.0) -> int:
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self.proc.wait(timeout)

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except BrokenPipeError:
                    pass


def events_of(tracer, timeout: float = 3.0, want: Optional[int] = None) -> list:
    """The tracer's events for up to ``timeout`` s (or until ``want`` arrived)."""
    out = []
    for ev in tracer.events(timeout):
        out.append(ev)
        if want is not None and len(out) >= want:
            break
    return out
