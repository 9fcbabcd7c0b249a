"""The documentation runs: every ```python block of README.md and docs/*.md,
and every doctest of alma_dag's modules.

The blocks of one file are executed in order in one fresh namespace, as if
the file were a script (``__name__ == "__main__"``), with the default loky
backend where the text uses it; a temporary directory is the working
directory, so nothing is written into the repository.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

import alma_dag

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A code fence, possibly indented (inside a list item); its info string
# says the language. Only ```python blocks run; a bare ``` closes a block.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```\s*(?P<info>\S*)")


@dataclass(frozen=True)
class CodeBlock:
    """A ```python block of a Markdown file."""

    #: Line number (1-based) of the block's first line of code.
    line: int
    #: The code.
    source: str


def python_blocks(text: str, name: str) -> list[CodeBlock]:
    """The ```python blocks of Markdown ``text``, in order."""
    blocks = []
    info = start = None
    indent = ""
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE.match(line)
        if info is None:
            if fence:
                info, indent, start, lines = (
                    fence["info"],
                    fence["indent"],
                    number + 1,
                    [],
                )
        elif fence and not fence["info"]:
            if info == "python":
                blocks.append(CodeBlock(start, "\n".join(lines) + "\n"))
            info = None
        else:
            lines.append(line.removeprefix(indent))
    if info is not None:
        raise AssertionError(
            f"{name}: the block opened at line {start - 1} is "
            "never closed; end it with a ``` line"
        )
    return blocks


def test_python_blocks_are_found():
    text = (
        "# Title\n"
        "```python\n"
        "x = 1\n"
        "```\n"
        "```\n"
        "not python\n"
        "```\n"
        "```python\n"
        "assert x == 1\n"
        "```\n"
        "- in a list item:\n"
        "  ```python\n"
        "  if x:\n"
        "      y = 2\n"
        "  ```\n"
    )
    assert python_blocks(text, "t.md") == [
        CodeBlock(3, "x = 1\n"),
        CodeBlock(9, "assert x == 1\n"),
        CodeBlock(13, "if x:\n    y = 2\n"),
    ]
    with pytest.raises(AssertionError, match="line 1 is never closed"):
        python_blocks("```python\nx = 1\n", "t.md")


def _doc_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", DOC_FILES, ids=_doc_id)
def test_doc_file_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = _doc_id(path)
    blocks = python_blocks(path.read_text(encoding="utf-8"), name)
    if not blocks:
        pytest.skip(f"{name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for block in blocks:
        # Padding puts the code at its own line numbers, so a traceback
        # points into the Markdown file.
        code = compile("\n" * (block.line - 1) + block.source, str(path), "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            details = "".join(traceback.format_exception(exc))
            failure = (
                f"{name}: the python block at line {block.line} raised "
                f"{type(exc).__name__}: {exc}\n{details}"
            )
        else:
            continue
        pytest.fail(failure, pytrace=False)


def _modules() -> list[str]:
    found = ["alma_dag"]
    for info in pkgutil.walk_packages(alma_dag.__path__, "alma_dag."):
        found.append(info.name)
    return sorted(found)


@pytest.mark.parametrize("module_name", _modules())
def test_doctests(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    output: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, module_name):
        runner.run(test, out=output.append)
    failed, _ = runner.summarize(verbose=False)
    assert not failed, f"doctests of {module_name} failed:\n" + "".join(output)
