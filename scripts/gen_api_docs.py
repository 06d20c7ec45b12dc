#!/usr/bin/env python3
"""Generate docs/api.md from the docstrings of pytracers' public modules.

    python3 scripts/gen_api_docs.py            # write docs/api.md
    python3 scripts/gen_api_docs.py --check    # exit 1 if docs/api.md is stale
    python3 scripts/gen_api_docs.py -o -       # print to stdout

Only the standard library (inspect) is used; nothing is fetched.  A module is
documented with its docstring, then every name in its ``__all__`` (or, without
one, every public name it defines): functions with their signatures, classes
with their public methods and properties.  Docstrings are written in a light
reStructuredText; the roles (``:class:`~x.Y```) and double backquotes become
Markdown code spans, the rest is kept as written.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import linecache
import os
import re
import sys
from typing import Any, Iterable, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Reading order: the object model first, then reading events, then the tracers
# and the prober, then the embedding helpers.
MODULES = [
    "pytracers",
    "pytracers.kinds",
    "pytracers.object",
    "pytracers.program",
    "pytracers.link",
    "pytracers.maps",
    "pytracers.eventbuf",
    "pytracers.mapbatch",
    "pytracers.globalvars",
    "pytracers.ringbuf",
    "pytracers.perfbuf",
    "pytracers.aio",
    "pytracers.btf",
    "pytracers.btf.foreign",
    "pytracers.tracers",
    "pytracers.tracers.base",
    "pytracers.tracers.exec",
    "pytracers.tracers.syscalls",
    "pytracers.tracers.process",
    "pytracers.tracers.tracepoint",
    "pytracers.tracers.function",
    "pytracers.tracers.policy",
    "pytracers.tracers.user_function",
    "pytracers.tracers.user_usdt",
    "pytracers.tracers.python",
    "pytracers.tracers.stacks",
    "pytracers.profiler",
    "pytracers.perf",
    "pytracers.symbolize",
    "pytracers.choose",
    "pytracers.features",
    "pytracers.kernel.host",
    "pytracers.kernel.symbols",
    "pytracers.kernel.tracefs",
    "pytracers.kernel.introspect",
    "pytracers.user.targets",
    "pytracers.user.symbols",
    "pytracers.user.elf_dwarf",
    "pytracers.user.usdt",
    "pytracers.kernel.arch",
    "pytracers.errors",
    "pytracers.pytest_plugin",
    "pytracers.agent",
    "pytracers.cli",
]

HEADER = """# pytracers API reference

Generated from the docstrings by `scripts/gen_api_docs.py`; do not edit by
hand (run `python3 scripts/gen_api_docs.py` after changing a docstring).
"""


def rst_to_md(text: str) -> str:
    """The little reStructuredText the docstrings use, as Markdown."""
    # :role:`~a.b.C` -> `C`; :role:`a.b.C` -> `a.b.C`; :role:`text <target>` -> `text`
    def role(m: "re.Match[str]") -> str:
        body = m.group(1)
        t = re.match(r"(.*?)\s*<([^>]*)>$", body)
        if t:
            return f"`{t.group(1)}`"
        if body.startswith("~"):
            return f"`{body[1:].rsplit('.', 1)[-1]}`"
        return f"`{body}`"
    text = "\n".join(_tables(text.splitlines()))   # before the spans change widths
    text = re.sub(r":[a-z]+:`([^`]+)`", role, text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    out: List[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        # definition list: a `term` line, its description indented below it
        ind = len(line) - len(line.lstrip())
        if (line.lstrip().startswith("`") and i + 1 < len(lines) and lines[i + 1].strip()
                and len(lines[i + 1]) - len(lines[i + 1].lstrip()) >= ind + 4
                and (i == 0 or not lines[i - 1].strip())):
            out.append(" " * ind + f"**{line.strip()}**")
            out.append("")
            i += 1
            while i < len(lines) and (not lines[i].strip()
                                      or len(lines[i]) - len(lines[i].lstrip()) >= ind + 4):
                out.append(lines[i][4:] if lines[i].startswith(" " * (ind + 4)) else lines[i])
                i += 1
            continue
        # section underlines (---- / ====) -> bold headings
        if (i + 1 < len(lines) and line.strip() and re.fullmatch(r"[-=~]{3,}", lines[i + 1].strip())
                and len(lines[i + 1].strip()) >= len(line.strip()) - 1):
            out.append(f"**{line.strip()}**")
            out.append("")
            i += 2
            continue
        # "text::" introduces a literal block
        if line.rstrip().endswith("::"):
            out.append(line.rstrip()[:-1] if not line.rstrip().endswith(" ::")
                       else line.rstrip()[:-3])
        else:
            out.append(line)
        i += 1
    return "\n".join(out).strip()


_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")


def _tables(lines: List[str]) -> List[str]:
    """reStructuredText simple tables (``====  ====`` borders) -> Markdown."""
    out: List[str] = []
    i = 0
    while i < len(lines):
        if not _BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        border = lines[i]
        starts = [m.start() for m in re.finditer(r"=+", border)]
        rows: List[List[str]] = []
        header: Optional[List[str]] = None
        i += 1
        while i < len(lines) and not _BORDER.match(lines[i]):
            if lines[i].strip():
                cells = [lines[i][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
                rows.append([c.replace("|", "\\|") for c in cells])
            i += 1
        i += 1                                  # the closing (or header) border
        if i < len(lines) and len(rows) == 1 and any(
                _BORDER.match(l) for l in lines[i:i + 50]):
            header, rows = rows[0], []          # border, header, border, rows, border
            while i < len(lines) and not _BORDER.match(lines[i]):
                if lines[i].strip():
                    cells = [lines[i][a:b].strip()
                             for a, b in zip(starts, starts[1:] + [None])]
                    rows.append([c.replace("|", "\\|") for c in cells])
                i += 1
            i += 1
        head = header or [" "] * len(starts)
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(starts))
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    return out


def _def_indent(fn: Any) -> Optional[int]:
    """Indentation of the ``def`` (or first decorator) line of function ``fn``."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return None
    line = linecache.getline(code.co_filename, code.co_firstlineno)
    if not line.strip():
        return None
    return len(line) - len(line.lstrip())


def _body_indent(obj: Any) -> Optional[int]:
    """Indentation of the body (and so of the docstring) of a function or
    class -- cheaper than inspect.getsource, which parses the whole module
    to find a class."""
    if inspect.isclass(obj):
        for v in vars(obj).values():
            fn = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
            if inspect.isfunction(fn) and fn.__qualname__.startswith(obj.__qualname__ + "."):
                return _def_indent(fn)
        return None
    d = _def_indent(obj)
    return None if d is None else d + 4


def getdoc(obj: Any) -> Optional[str]:
    """``obj``'s own docstring, dedented by its source indentation rather than
    by its least-indented line (inspect.getdoc), so an indented example in a
    docstring stays indented -- a Markdown code block."""
    raw = obj.__doc__
    if not isinstance(raw, str) or not raw.strip():
        return None
    if inspect.ismodule(obj):
        margin = 0
    else:
        body = _body_indent(obj)
        if body is None:
            return inspect.cleandoc(raw)
        margin = body
    lines = raw.expandtabs().splitlines()
    out = [lines[0].strip()]
    for line in lines[1:]:
        lead = len(line) - len(line.lstrip())
        out.append(line[min(lead, margin):])
    return "\n".join(out).strip("\n")


def _annotation(a: Any) -> str:
    if a is inspect.Parameter.empty:
        return ""
    if isinstance(a, str):
        return a.replace("'", "").replace('"', "")
    return inspect.formatannotation(a)


def signature(obj: Any) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    parts: List[str] = []
    seen_kwonly = False
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and p.name in ("self", "cls"):
            continue
        if p.kind is p.KEYWORD_ONLY and not seen_kwonly:
            parts.append("*")
            seen_kwonly = True
        s = p.name
        if p.kind is p.VAR_POSITIONAL:
            s, seen_kwonly = "*" + s, True
        elif p.kind is p.VAR_KEYWORD:
            s = "**" + s
        ann = _annotation(p.annotation)
        if ann:
            s += f": {ann}"
        if p.default is not p.empty:
            s += (" = " if ann else "=") + repr(p.default)
        parts.append(s)
    ret = _annotation(sig.return_annotation)
    return f"({', '.join(parts)})" + (f" -> {ret}" if ret and ret != "None" else "")


def _public_names(mod: Any) -> List[str]:
    names = getattr(mod, "__all__", None)
    if names is not None:
        return [n for n in names if hasattr(mod, n)]
    return [n for n, v in vars(mod).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == mod.__name__
            and (inspect.isclass(v) or inspect.isfunction(v))]


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9_ -]", "", title.lower()).replace(" ", "-")


def document_class(cls: type, qual: str) -> List[str]:
    out = [f"### class `{qual}`", ""]
    try:
        init_sig = signature(vars(cls)["__init__"]) if "__init__" in vars(cls) else ""
    except Exception:
        init_sig = ""
    if init_sig:
        out += ["```python", f"{cls.__name__}{init_sig.split(' -> ')[0]}", "```", ""]
    bases = [b.__name__ for b in cls.__bases__
             if b is not object and not b.__name__.startswith("_")]   # private: not API
    if bases:
        out += [f"Bases: {', '.join(f'`{b}`' for b in bases)}", ""]
    doc = getdoc(cls)
    if doc and doc != object.__doc__:
        out += [rst_to_md(doc), ""]
    members: List[Tuple[str, Any]] = []
    for name, v in vars(cls).items():
        if name.startswith("_") and name not in ("__iter__", "__aiter__", "__getitem__",
                                                 "__call__"):
            continue
        members.append((name, v))
    for name, v in members:
        if isinstance(v, property):
            doc = getdoc(v.fget) or "" if v.fget is not None else ""
            out += [f"#### `{cls.__name__}.{name}` *(property)*", ""]
            if doc:
                out += [rst_to_md(doc), ""]
        elif isinstance(v, (staticmethod, classmethod)) or inspect.isfunction(v):
            fn = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v
            tag = " *(classmethod)*" if isinstance(v, classmethod) else (
                " *(staticmethod)*" if isinstance(v, staticmethod) else "")
            out += [f"#### `{cls.__name__}.{name}{signature(fn)}`{tag}", ""]
            doc = getdoc(fn)
            if doc:
                out += [rst_to_md(doc), ""]
    return out



def _value_repr(v: Any) -> str:
    """repr() of a documented constant; sets sorted, so the page does not
    change with the interpreter's hash seed."""
    if isinstance(v, (set, frozenset)):
        inner = ", ".join(repr(x) for x in sorted(v, key=repr))
        return f"{type(v).__name__}({{{inner}}})" if v else f"{type(v).__name__}()"
    return repr(v)

def document_module(modname: str) -> Optional[List[str]]:
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name == modname:
            print(f"gen_api_docs: {modname} does not exist (yet); skipped", file=sys.stderr)
            return None
        raise
    out = [f"## `{modname}`", ""]
    doc = getdoc(mod)
    if doc:
        out += [rst_to_md(doc), ""]
    for name in _public_names(mod):
        v = getattr(mod, name)
        home = getattr(v, "__module__", modname)
        if (inspect.isclass(v) or inspect.isfunction(v)) and home != modname \
                and home in MODULES and modname != "pytracers":
            out += [f"- `{name}`: see [`{home}`](#{_anchor(home)})", ""]
            continue
        if inspect.isclass(v):
            if home != modname and modname == "pytracers" and home in MODULES:
                out += [f"- class `{name}`: see [`{home}`](#{_anchor(home)})", ""]
                continue
            out += document_class(v, f"{modname}.{name}")
        elif inspect.isfunction(v) or inspect.isbuiltin(v):
            if home != modname and modname == "pytracers" and home in MODULES:
                out += [f"- `{name}()`: see [`{home}`](#{_anchor(home)})", ""]
                continue
            out += [f"### `{modname}.{name}{signature(v)}`", ""]
            d = getdoc(v)
            if d:
                out += [rst_to_md(d), ""]
        elif inspect.ismodule(v):
            continue
        else:
            out += [f"### `{modname}.{name}` = `{_value_repr(v)}`"[:200], ""]
    return out


def generate(modules: Iterable[str] = MODULES) -> str:
    sections: List[Tuple[str, List[str]]] = []
    for m in modules:
        lines = document_module(m)
        if lines is not None:
            sections.append((m, lines))
    toc = ["## Contents", ""] + [f"- [`{m}`](#{_anchor(m)})" for m, _ in sections] + [""]
    body: List[str] = []
    for _m, lines in sections:
        body += lines
    text = "\n".join([HEADER, *toc, *body])
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "api.md"),
                    help="where to write (default docs/api.md; '-' for stdout)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 (with a diff) if the output file is stale")
    args = ap.parse_args(argv)
    text = generate()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    if args.check:
        try:
            with open(args.output) as f:
                old = f.read()
        except FileNotFoundError:
            old = ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), text.splitlines(True), args.output, "generated"))
            print(f"{args.output} is stale: run scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    print(f"wrote {args.output} ({len(text.splitlines())} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
