"""Kernels of a compiled XLA CPU program, counted by family.

XLA's CPU runtime runs a program as one call per instruction of its entry
computation (a fusion, a library dot or reduction, a copy); on a small model
their fixed cost, not the arithmetic, sets the step time. This reads the
optimized HLO that XLA writes with
  XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text" cargo bench --bench train -- tiny --steps 2
and prints, per program, how many kernels of each family it runs.

  python3 tools/hlo_kernels.py DIR [--program train_step]
"""
import argparse, collections, pathlib, re, sys

# Entry instructions that run no kernel: arguments, aliases, constants, tuples.
FREE = {"parameter", "bitcast", "constant", "tuple", "get-tuple-element"}


def computations(text):
    """name -> body of every computation in an HLO module's text."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(?:ENTRY )?(%[\w.\-]+) [^\n]*\{\n(.*?)\n\}", text, re.S | re.M)}


def entry_body(text):
    m = re.search(r"^ENTRY [^\n]*\{\n(.*?)\n\}", text, re.S | re.M)
    if not m:
        raise SystemExit("no ENTRY computation found")
    return m.group(1)


def family(line, comps):
    """A kernel's family: its opcode, and for fusions their kind and what they compute."""
    m = re.match(r"\s*(?:ROOT\s+)?%[\w.\-]+ = .*? ([a-z\-]+)\(", line)
    if not m:
        return None
    op = m.group(1)
    if op in FREE:
        return None
    if op != "fusion":
        return op
    calls = re.search(r"calls=(%[\w.\-]+)", line)
    body = comps.get(calls.group(1), "") if calls else ""
    inner = sorted(set(re.findall(r" ([a-z\-]+)\(", body)) - FREE)
    if "__ynn_fusion" in line:
        return "ynnpack " + ("dot" if "dot" in inner else "reduce" if "reduce" in inner else "+".join(inner))
    kind = re.search(r"kind=(\w+)", line)
    return f"fusion {kind.group(1) if kind else '?'}: " + ("reduce" if "reduce" in inner else "dot" if "dot" in inner else "elementwise/copy")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--program", help="only programs whose name contains this")
    args = ap.parse_args()
    files = sorted(args.dir.glob("*.cpu_after_optimizations.txt"))
    if args.program:
        files = [f for f in files if args.program in f.name]
    if not files:
        sys.exit(f"no *.cpu_after_optimizations.txt in {args.dir}{' for ' + args.program if args.program else ''}")
    for f in files:
        text = f.read_text()
        comps = computations(text)
        counts = collections.Counter(filter(None, (family(l, comps) for l in entry_body(text).splitlines())))
        print(f"{f.name.split('.cpu_after')[0]}: {sum(counts.values())} kernels")
        for name, n in counts.most_common():
            print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
