"""An interactive SVG flame graph, written by pytracers: one ``<g class="f">``
per frame (a rectangle and its label, the weight in ``data-n``), click to
zoom, Ctrl-F / the Search button to highlight, a small inline script and no
network.  Frames of one parent are sorted by name (as flamegraph.pl does), so
the graph reads the same for the same profile."""
from __future__ import annotations

import zlib
from typing import Dict, List, Tuple
from xml.sax.saxutils import escape, quoteattr

__all__ = ["render"]

WIDTH = 1200
ROW = 16
PAD_TOP = 50
PAD_SIDE = 10
MIN_WIDTH = 0.1          # px: narrower frames are merged out of the picture (not the counts)

_SCRIPT = r"""
var svg = document.documentElement, frames = [], searchOn = false;
function init() {
  frames = Array.prototype.slice.call(document.querySelectorAll("g.f"));
  frames.forEach(function (g) {
    g.addEventListener("click", function () { zoom(g); });
    g.addEventListener("mouseover", function () { details(g); });
  });
  document.getElementById("reset").addEventListener("click", function () { zoom(null); });
  document.getElementById("search").addEventListener("click", search);
  window.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "f") { e.preventDefault(); search(); }
  });
}
function attr(g, n) { return parseFloat(g.getAttribute(n)); }
function details(g) {
  document.getElementById("details").textContent =
    g.getAttribute("data-name") + " (" + g.getAttribute("data-n") + " " + UNIT + ", " +
    (100 * attr(g, "data-n") / TOTAL).toFixed(2) + "%)";
}
function zoom(target) {
  var x0 = 0, w0 = FULL, d0 = -1;
  if (target) { x0 = attr(target, "data-x"); w0 = attr(target, "data-w"); d0 = attr(target, "data-d"); }
  var scale = FULL / w0;
  frames.forEach(function (g) {
    var x = attr(g, "data-x"), w = attr(g, "data-w"), d = attr(g, "data-d");
    var r = g.querySelector("rect"), t = g.querySelector("text");
    var inside = x >= x0 - 1e-6 && x + w <= x0 + w0 + 1e-6;
    var above = target && d < d0 && x <= x0 + 1e-6 && x + w >= x0 + w0 - 1e-6;
    if (target && !inside && !above) { g.style.display = "none"; return; }
    g.style.display = "";
    var nx = above ? 0 : (x - x0) * scale, nw = above ? FULL : w * scale;
    r.setAttribute("x", PAD + nx); r.setAttribute("width", Math.max(nw - 0.5, 0));
    g.style.opacity = above ? 0.6 : 1;
    t.setAttribute("x", PAD + nx + 3);
    var name = g.getAttribute("data-name"), fit = Math.floor((nw - 6) / 7);
    t.textContent = fit < 3 ? "" : (name.length > fit ? name.slice(0, fit - 2) + ".." : name);
  });
}
function search() {
  var term = searchOn ? null : prompt("Search frames (a regular expression):", "");
  var re = null, hit = 0;
  if (term) { try { re = new RegExp(term); } catch (e) { re = null; } }
  searchOn = !!re;
  frames.forEach(function (g) {
    var r = g.querySelector("rect");
    if (re && re.test(g.getAttribute("data-name"))) {
      r.setAttribute("fill", "rgb(230,0,230)");
      if (attr(g, "data-d") >= 0) hit += attr(g, "data-n");
    } else { r.setAttribute("fill", r.getAttribute("data-fill")); }
  });
  document.getElementById("matched").textContent =
    re ? "Matched: " + (100 * hit / TOTAL).toFixed(1) + "% (frames counted once per level)" : "";
  document.getElementById("search").textContent = re ? "Reset search" : "Search";
}
window.addEventListener("load", init);
"""


class _Node:
    __slots__ = ("name", "n", "children")

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.children: Dict[str, "_Node"] = {}


def _color(name: str) -> str:
    if name.endswith("_[k]"):
        h = zlib.crc32(name.encode()) & 0xFF
        return f"rgb({200 + h % 55},{140 + h % 60},{40 + h % 40})"
    if name.startswith("[unknown]"):
        return "rgb(180,180,180)"
    h = zlib.crc32(name.encode())
    return f"rgb({205 + h % 50},{(h >> 8) % 150 + 50},{(h >> 16) % 50 + 20})"


def render(stacks: Dict[Tuple[str, ...], int], *, title: str = "Flame graph",
           subtitle: str = "", unit: str = "samples") -> str:
    root = _Node("all")
    for path, n in stacks.items():
        root.n += n
        node = root
        for name in path:
            node = node.children.setdefault(name, _Node(name))
            node.n += n
    full = WIDTH - 2 * PAD_SIDE
    total = max(root.n, 1)
    rows: List[Tuple[_Node, float, float, int]] = []
    depth_max = [0]

    def walk(node: _Node, x: float, depth: int) -> None:
        w = full * node.n / total
        depth_max[0] = max(depth_max[0], depth)
        rows.append((node, x, w, depth))
        cx = x
        for name in sorted(node.children):
            child = node.children[name]
            walk(child, cx, depth + 1)
            cx += full * child.n / total
    walk(root, 0.0, 0)
    height = PAD_TOP + (depth_max[0] + 1) * ROW + 30
    out = [f'<?xml version="1.0" standalone="no"?>',
           f'<svg version="1.1" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" '
           f'data-total="{root.n}" data-unit={quoteattr(unit)}>',
           "<style>text { font-family: Verdana, sans-serif; font-size: 12px; fill: #000; } "
           "g.f:hover rect { stroke: #000; stroke-width: 0.5; cursor: pointer; } "
           ".ui { cursor: pointer; fill: #00a; }</style>",
           f"<script><![CDATA[\nvar TOTAL = {total}, FULL = {full}, PAD = {PAD_SIDE}, "
           f"UNIT = {quoteattr(unit)};\n{_SCRIPT}]]></script>",
           f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#f8f8f0"/>',
           f'<text x="{WIDTH // 2}" y="20" text-anchor="middle" '
           f'style="font-size:16px">{escape(title)}</text>',
           f'<text x="{WIDTH // 2}" y="38" text-anchor="middle" fill="#555">'
           f'{escape(subtitle)}</text>',
           f'<text id="reset" class="ui" x="{PAD_SIDE}" y="20">Reset zoom</text>',
           f'<text id="search" class="ui" x="{WIDTH - 110}" y="20">Search</text>',
           f'<text id="matched" x="{WIDTH - 260}" y="{height - 10}"></text>',
           f'<text id="details" x="{PAD_SIDE}" y="{height - 10}"></text>']
    for node, x, w, depth in rows:
        if w < MIN_WIDTH and depth > 1:   # the first level is always drawn (sums hold)
            continue
        y = height - 40 - depth * ROW
        fill = "rgb(220,220,220)" if depth == 0 else _color(node.name)
        fit = int((w - 6) // 7)
        label = "" if fit < 3 else (node.name if len(node.name) <= fit
                                    else node.name[:fit - 2] + "..")
        out.append(f'<g class="f" data-name={quoteattr(node.name)} data-n="{node.n}" '
                   f'data-x="{x:.3f}" data-w="{w:.3f}" data-d="{depth - 1}">'
                   f'<title>{escape(node.name)} ({node.n} {escape(unit)}, '
                   f'{100 * node.n / total:.2f}%)</title>'
                   f'<rect x="{PAD_SIDE + x:.2f}" y="{y}" width="{max(w - 0.5, 0):.2f}" '
                   f'height="{ROW - 1}" fill="{fill}" data-fill="{fill}" rx="2"/>'
                   f'<text x="{PAD_SIDE + x + 3:.2f}" y="{y + ROW - 4}">{escape(label)}</text>'
                   f'</g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
