"""How runs descend from each other, and how their settings differ.

The lineage is a forest: a run hangs under the run it started from (a merge under its first parent, naming
the others), and a run whose parent is not in the workspace is a root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.runs.table import RunRow


@dataclass
class Node:
    row: RunRow
    children: list[Node] = field(default_factory=list)


def lineage(rows: list[RunRow]) -> list[Node]:
    """The runs as trees, oldest first at each level."""
    ordered = sorted(rows, key=lambda r: (r.created, r.name))
    nodes = {r.name: Node(r) for r in ordered}
    roots = []
    for row in ordered:
        parent = next((p for p in row.parents if p in nodes and p != row.name), None)
        if parent is None or _descends(nodes, parent, row.name):
            roots.append(nodes[row.name])
        else:
            nodes[parent].children.append(nodes[row.name])
    return roots


def _descends(nodes: dict[str, Node], name: str, ancestor: str) -> bool:
    """Whether `name`'s first-parent chain reaches `ancestor` (a loop in damaged run.json files)."""
    seen = set()
    while name in nodes and name not in seen:
        if name == ancestor:
            return True
        seen.add(name)
        parents = [p for p in nodes[name].row.parents if p in nodes]
        name = parents[0] if parents else ""
    return False


def node_label(row: RunRow) -> str:
    """A run as the tree names it: name, kind, status and its best bits per byte."""
    others = f" of {' + '.join(row.parents)}" if row.kind == "merge" else ""
    bpb = f", {row.best_bpb:.3f} bits/byte" if row.best_bpb is not None else ""
    return f"{row.name} ({row.kind}{others}, {row.status}{bpb})"


def tree_lines(roots: list[Node]) -> list[str]:
    """The forest drawn with box characters, one run a line."""
    lines: list[str] = []

    def walk(node: Node, prefix: str, last: bool, top: bool) -> None:
        lines.append(node_label(node.row) if top else f"{prefix}{'└─ ' if last else '├─ '}{node_label(node.row)}")
        inner = "" if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(node.children):
            walk(child, inner, i == len(node.children) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return lines


def config_diff(rows: list[RunRow]) -> dict[str, list[Any]]:
    """The settings that differ between runs: field -> each run's value (None where a run lacks it)."""
    keys = sorted({k for r in rows for k in r.config}, key=lambda k: (k.count("."), k))
    diff = {}
    for key in keys:
        values = [r.config.get(key) for r in rows]
        if any(v != values[0] for v in values[1:]):
            diff[key] = values
    return diff
