"""Where the precompiled objects shipped with pytracers are (re-exported by
the package as ``pytracers.objects_dir`` / ``pytracers.object_path``).

A module of its own so that the library's own modules can find the shipped
objects without importing the package's ``__init__``.
"""
from __future__ import annotations

import os


def objects_dir() -> str:
    """The directory holding the precompiled objects shipped with pytracers."""
    return os.path.join(os.path.dirname(__file__), "bpf")


def object_path(name: str) -> str:
    """Path of a shipped object by short name ("exec" -> .../bpf/exec.bpf.o)."""
    return os.path.join(objects_dir(), f"{name}.bpf.o")
