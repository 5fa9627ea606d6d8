"""Config overrides shared by the JAX benchmarks in tools/."""
import sys

import yaml


def apply_overrides(tree, items):
    """`key.path=value` overrides, values parsed as YAML scalars (as `--set` of our CLI)."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            sys.exit(f"override '{item}' must look like key.path=value")
        *parents, leaf = key.strip().split(".")
        node = tree
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[leaf] = value
    return tree
