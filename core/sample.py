"""The bundled sample corpus, made offline from the running Python's own documentation.

Two JSONL files of English prose: the language reference topics that `help()` shows
(`pydoc_data.topics`) and the docstrings of the standard library, read from its source files with
`ast` (nothing is imported or executed). About 3 MB; no network, nothing copied into the repository.
"""

from __future__ import annotations

import ast
import inspect
import json
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from core import atomic

SAMPLE_DIR = "sample"
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
MIN_DOC_CHARS = 200


def topic_documents() -> Iterator[dict[str, str]]:
    from pydoc_data.topics import topics

    for title in sorted(topics):
        text = topics[title].strip()
        if len(text) >= MIN_DOC_CHARS:
            yield {"title": title, "text": text}


def _docstrings(tree: ast.Module, module: str) -> Iterator[str]:
    doc = ast.get_docstring(tree)
    if doc:
        yield f"Module {module}\n\n{inspect.cleandoc(doc)}"
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 20:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                yield f"{module}.{node.name} ({kind})\n\n{inspect.cleandoc(doc)}"


def docstring_documents(stdlib: Path | None = None) -> Iterator[dict[str, str]]:
    """One document per standard-library module: its docstrings, in source order."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_PARTS & set(rel.parts) or any(p.startswith(".") for p in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        text = "\n\n".join(_docstrings(tree, module))
        if len(text) >= MIN_DOC_CHARS:
            yield {"title": module, "text": text}


def _jsonl(docs: Iterator[dict[str, str]]) -> str:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)


def write_sample_corpus(data_dir: Path) -> list[Path]:
    """Write the sample corpus into `data_dir/sample/` (atomically, file by file); return the files."""
    out = Path(data_dir) / SAMPLE_DIR
    files = {
        out / "python-topics.jsonl": _jsonl(topic_documents()),
        out / "python-docstrings.jsonl": _jsonl(docstring_documents()),
    }
    for path, text in files.items():
        atomic.write_text(path, text)
    return list(files)
