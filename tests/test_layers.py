"""The house rules of the code's layout, read from the source (nothing is imported or run).

- Layers: a module imports only from its own layer or the layers below it; the stage packages of one layer
  (`core.train`, `core.export` and `core.plan`) are independent of each other. `core` never imports Textual or `tui`.
- No import circles between modules, counting every import (lazy and type-only ones too).
- No two names in one folder that differ by a single letter (`tokenizer.py` beside `tokenizers.py`).
- No module over MAX_LINES lines (the trainer, like litgpt's `pretrain.py`, may reach TRAINER_LINES).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "tui", "themes")
MAX_LINES, TRAINER_LINES = 450, 550

# Top to bottom. Entries joined in one tuple are one layer; `independent` layers' entries must not import
# each other, the others' may.
LAYERS: list[tuple[tuple[str, ...], bool]] = [
    (("tui",), False),
    (("themes",), False),
    (("core.merge", "core.runs"), True),
    (("core.train", "core.export", "core.plan"), True),
    (("core.chat",), False),
    (("core.model", "core.optim", "core.checkpoint", "core.listing", "core.evaluate"), False),
    (("core.tokenizer",), False),
    (("core.data",), False),
    (("core.errors", "core.atomic", "core.config", "core.workspace", "core.device"), False),
]
NEVER_IN_CORE = ("textual", "tui", "themes")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = source_files()


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file: `from a import b` counts as `a.b` when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return found


GRAPH = {name: {i for i in imports(path) if i in MODULES} for name, path in MODULES.items()}
ALL_IMPORTS = {name: imports(path) for name, path in MODULES.items()}


def entry_of(module: str) -> tuple[int, str] | None:
    """(layer index, entry) of a module, or None when no layer names it."""
    for index, (entries, _) in enumerate(LAYERS):
        for entry in entries:
            if module == entry or module.startswith(entry + "."):
                return index, entry
    return None


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if m not in ("core",) and entry_of(m) is None]
    assert not unplaced, f"add these modules to a layer in LAYERS: {unplaced}"


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        here = entry_of(module)
        for target in targets:
            there = entry_of(target)
            if here is None or there is None or here[1] == there[1]:
                continue
            upward = there[0] < here[0]
            across = there[0] == here[0] and LAYERS[here[0]][1]
            if upward or across:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_core_never_imports_the_studio() -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in ALL_IMPORTS.items()
        if module.startswith("core")
        for target in targets
        if target.split(".")[0] in NEVER_IN_CORE
    ]
    assert not wrong, "core must not import Textual or the studio:\n" + "\n".join(sorted(wrong))


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_no_import_circles() -> None:
    circle = find_circle(GRAPH)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_finder_finds_circles() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def one_letter_apart(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


@pytest.mark.parametrize("package", [*PACKAGES, "tests", "bench"])
def test_no_look_alike_names_in_a_folder(package: str) -> None:
    clashes = []
    for folder in [ROOT / package, *(p for p in (ROOT / package).rglob("*") if p.is_dir())]:
        stems = sorted({p.stem for p in folder.iterdir() if p.suffix in (".py", ".tcss", "") and p.name[0] not in "._"})
        clashes += [
            f"{folder.name}/: {a} ~ {b}" for i, a in enumerate(stems) for b in stems[i + 1 :] if one_letter_apart(a, b)
        ]
    assert not clashes, "names one letter apart:\n" + "\n".join(clashes)


def test_one_letter_apart() -> None:
    assert one_letter_apart("tokenizer", "tokenizers") and one_letter_apart("sample", "simple")
    assert not one_letter_apart("sample", "sampling") and not one_letter_apart("chat", "chat")


def test_modules_stay_short() -> None:
    long = []
    for module, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        limit = TRAINER_LINES if module == "core.train.trainer" else MAX_LINES
        if lines > limit:
            long.append(f"{module}: {lines} lines (at most {limit}): split it at a seam")
    assert not long, "\n".join(long)
