#!/usr/bin/python3
"""check_layers.py OBJDIR: the dependency rules of the source tree (`make lint`).

Fails (exit 1, one line per finding) when
- two modules use each other, directly or around a loop.  A module is one
  .c file with its .h.  "Uses" is either an #include of the other's header
  or a call of (or reference to) a symbol the other defines, read from the
  object files with nm, so a prototype copied by hand does not hide a
  dependency;
- a folder includes a header of a folder above it: tools -> billing ->
  ledger -> common, nothing points up;
- a folder holds more than MAX_C_FILES C files (split it by concern).
Header-only files (server_int.h: a struct and inline helpers) are modules
of their own."""
import collections
import glob
import os
import re
import subprocess
import sys

LAYERS = ["common", "ledger", "billing", "tools"]  # lower first
MAX_C_FILES = 15
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module(path):
    m = path.rsplit(".", 1)[0]
    return m[:-4] if m.endswith(".lua") else m


def layer(mod):
    top = mod.split("/", 1)[0]
    return LAYERS.index(top) if top in LAYERS else None


def include_edges(root):
    edges, where = collections.defaultdict(set), {}
    for top in LAYERS:
        for path in glob.glob(os.path.join(root, top, "**", "*.[ch]"), recursive=True):
            rel = os.path.relpath(path, root)
            if rel.startswith("tools/bench/"):
                continue
            src = module(rel)
            for inc in INCLUDE.findall(open(path, errors="replace").read()):
                dst = module(inc)
                if dst != src:
                    edges[src].add(dst)
                    where.setdefault((src, dst), f"{rel} includes {inc}")
    return edges, where


def symbol_edges(objdir):
    defs, uses = {}, collections.defaultdict(set)
    for obj in glob.glob(os.path.join(objdir, "**", "*.o"), recursive=True):
        rel = os.path.relpath(obj, objdir)
        if layer(rel) is None or rel.startswith("tools/bench/"):
            continue
        mod = rel[:-2]
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] in "TDBRV":
                defs[f[2]] = mod
            elif len(f) == 2 and f[0] == "U":
                uses[mod].add(f[1])
    edges, where = collections.defaultdict(set), {}
    for mod, syms in uses.items():
        for s in sorted(syms):
            d = defs.get(s)
            if d and d != mod:
                edges[mod].add(d)
                where.setdefault((mod, d), f"{mod}.c uses {s} of {d}.c")
    return edges, where


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    objdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build", "obj")
    if not glob.glob(os.path.join(objdir, "**", "*.o"), recursive=True):
        print(f"check_layers: no object files under {objdir} (run make first)", file=sys.stderr)
        return 2
    inc, inc_where = include_edges(root)
    sym, sym_where = symbol_edges(objdir)
    edges = collections.defaultdict(set)
    for e in (inc, sym):
        for k, v in e.items():
            edges[k] |= v
    bad = []
    for comp in cycles(edges):
        why = [inc_where.get((a, b)) or sym_where.get((a, b)) for a in comp for b in comp if b in edges[a]]
        bad.append("a circle: " + " <-> ".join(comp) + " (" + "; ".join(w for w in why if w) + ")")
    for (src, dst), w in sorted(inc_where.items()):
        if layer(src) is not None and layer(dst) is not None and layer(dst) > layer(src):
            bad.append(f"an upward include: {w}")
    for top in LAYERS:
        for folder, _, files in os.walk(os.path.join(root, top)):
            n_c = sum(f.endswith(".c") for f in files)
            if n_c > MAX_C_FILES:
                bad.append(f"{os.path.relpath(folder, root)} holds {n_c} C files (at most {MAX_C_FILES})")
    for b in bad:
        print(f"check_layers: {b}", file=sys.stderr)
    n_mod = len({m for m in edges} | {d for v in edges.values() for d in v})
    if not bad:
        print(f"check_layers: {n_mod} modules, no circle, nothing points up")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
