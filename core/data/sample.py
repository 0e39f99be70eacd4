"""The bundled sample corpus, made offline from the running Python's own documentation.

Two JSONL files of English prose: the language reference topics that `help()` shows
(`pydoc_data.topics`) and the docstrings of the standard library, read from its source files with
`ast` (nothing is imported or executed). About 3 MB; no network, nothing copied into the repository.

A third file holds conversations derived from the other two for chat fine-tuning (`slm sft --sample`):
questions about each titled section, module, class and function, answered with the first sentences of
its text ("What does json.dumps do?" -> "Serialize obj to a JSON formatted str.").
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import re
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from core import atomic

SAMPLE_DIR = "sample"
TOPICS_FILE, DOCSTRINGS_FILE, CHAT_FILE = "python-topics.jsonl", "python-docstrings.jsonl", "python-chat.jsonl"
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


def _jsonl(docs: Iterable[dict]) -> str:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)


# --- conversations derived from the corpus ------------------------------------------------------

MAX_ANSWER_CHARS = 160  # question and answer then fit the toy preset's context
UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")
ENTRY = re.compile(r"^(?:Module ([\w.]+)|([\w.]+) \((class|function)\))$")
RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"])")
QUESTIONS = {
    "topic": ["What is {}?", "Explain {}.", "Tell me about {}."],
    "module": ["What is the {} module?", "What does the {} module do?"],
    "class": ["What is {}?", "What is the {} class for?"],
    "function": ["What does {} do?", "What is {} for?"],
}


def _paragraphs(lines: list[str]) -> Iterator[list[str]]:
    paragraph: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield paragraph
            paragraph = []


def _first_prose(lines: list[str]) -> str | None:
    """The first paragraph that is prose: not indented (code, grammar), not a heading."""
    for paragraph in _paragraphs(lines):
        if paragraph[0][:1].isspace() or any("::=" in line for line in paragraph):
            continue
        if UNDERLINE.match(paragraph[-1].strip()):
            continue
        return " ".join(" ".join(paragraph).replace("``", "").split())
    return None


def _short_answer(paragraph: str) -> str | None:
    """The first sentences of a paragraph, up to MAX_ANSWER_CHARS; None when even one is longer."""
    answer = ""
    for sentence in SENTENCE_END.split(RST_ROLE.sub(r"\1", paragraph)):
        longer = f"{answer} {sentence}".strip()
        if len(longer) > MAX_ANSWER_CHARS:
            break
        answer = longer
        if len(answer) >= 60:
            break
    if len(answer) < 20 or not answer.endswith((".", "!", "?")) or "::" in answer or ">>>" in answer:
        return None
    return answer


def _topic_sections(text: str) -> Iterator[tuple[str, str, list[str]]]:
    """("topic", heading, body lines) for every underlined heading of a language reference topic."""
    lines = text.splitlines()
    heads = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip() and UNDERLINE.match(lines[i + 1].strip()) and len(lines[i + 1]) >= len(lines[i].strip())
    ]
    for n, i in enumerate(heads):
        end = heads[n + 1] if n + 1 < len(heads) else len(lines)
        yield "topic", lines[i].strip(), lines[i + 2 : end]


def _docstring_entries(text: str) -> Iterator[tuple[str, str, list[str]]]:
    """(kind, dotted name, docstring lines) for each public module, class and function of a document."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if ENTRY.match(line) and (i == 0 or not lines[i - 1].strip())]
    for n, i in enumerate(starts):
        module, name, kind = ENTRY.match(lines[i]).groups()  # type: ignore[union-attr]
        if not any(part.startswith("_") for part in (module or name).split(".")):
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            yield ("module" if module else kind), module or name, lines[i + 1 : end]


def _question(kind: str, subject: str) -> str:
    templates = QUESTIONS[kind]
    pick = hashlib.blake2b(subject.encode(), digest_size=4).digest()[0] % len(templates)
    if kind == "topic" and subject.startswith(("The ", "A ", "An ")):
        subject = subject[0].lower() + subject[1:]
    return templates[pick].format(subject)


def sample_conversations(topics: Iterable[dict], docstrings: Iterable[dict]) -> Iterator[dict]:
    """One question-and-answer conversation per section, module, class and function that has a short answer."""
    sections = [part for d in topics for part in _topic_sections(d["text"])]
    sections += [part for d in docstrings for part in _docstring_entries(d["text"])]
    for kind, subject, lines in sections:
        paragraph = _first_prose(lines)
        answer = _short_answer(paragraph) if paragraph else None
        if answer:
            question = _question(kind, subject)
            yield {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_sample_corpus(data_dir: Path) -> list[Path]:
    """Write the sample corpus and its conversations into `data_dir/sample/` (atomically, file by file)."""
    out = Path(data_dir) / SAMPLE_DIR
    topics, docstrings = list(topic_documents()), list(docstring_documents())
    files = {
        out / TOPICS_FILE: _jsonl(topics),
        out / DOCSTRINGS_FILE: _jsonl(docstrings),
        out / CHAT_FILE: _jsonl(sample_conversations(topics, docstrings)),
    }
    for path, text in files.items():
        atomic.write_text(path, text)
    return list(files)


def write_sample_chat(data_dir: Path) -> Path:
    """The sample conversations file, derived from the sample corpus already there (else written with it)."""
    out = Path(data_dir) / SAMPLE_DIR
    sources = [out / TOPICS_FILE, out / DOCSTRINGS_FILE]
    if not all(p.is_file() for p in sources):
        return write_sample_corpus(data_dir)[-1]
    topics, docstrings = ([json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for p in sources)
    atomic.write_text(out / CHAT_FILE, _jsonl(sample_conversations(topics, docstrings)))
    return out / CHAT_FILE
