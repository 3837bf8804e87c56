"""The code the book shows, laid out to fit its text column (:data:`CODE_WIDTH`): the
library's own source (:func:`show_source`), a test's (:func:`show_test`) and shell commands
(:func:`wrap_command`). The code is shown as the library runs it, only in shorter lines.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any

from IPython.display import Markdown

from coop_utils.config import REPO_ROOT

#: the widest line of code the book shows: wider lines do not fit its text column at 1280 px
CODE_WIDTH = 78


def wrap_command(command: str, width: int = CODE_WIDTH) -> str:
    """A shell command in lines of at most ``width`` characters, broken before its options
    with ``\\`` (an option is never split from its value)."""
    words = command.split(" ")
    parts: list[str] = []  # an option with its value, or a word
    for word in words:
        option = parts and parts[-1].startswith("-") and " " not in parts[-1]
        if option and not word.startswith("-"):  # the option's value
            parts[-1] += f" {word}"
        else:
            parts.append(word)
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 1 + len(part) + 2 <= width:
            lines[-1] += f" {part}"
        else:
            lines.append(f"    {part}")
    return " \\\n".join(lines)


def show_source(function: Any):
    """The library's own source of ``function``, as a highlighted code block laid out to fit
    the book's column (:func:`fit_source`): the code the library runs, in shorter lines."""
    source = textwrap.dedent(inspect.getsource(function)).rstrip()  # a method is indented
    return Markdown(f"```python\n{fit_source(source)}\n```")


def _ruff() -> str | None:
    beside = Path(sys.executable).with_name("ruff")
    return str(beside) if beside.exists() else shutil.which("ruff")


def _split_string(line: str, width: int) -> list[str]:
    """A line holding one string literal inside brackets, as adjacent literals (which Python
    joins) of at most ``width`` characters, split at spaces outside any ``{...}``; unchanged
    where it cannot be split."""
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip()
    tail = body[len(body.rstrip(",)")) :]
    literal = body[: len(body) - len(tail)]
    prefix = literal[: len(literal) - len(literal.lstrip("rRbBfFuU"))]
    quote = literal[len(prefix)]
    text = literal[len(prefix) + 1 : -1]
    if quote in text or literal[-1] != quote or literal[len(prefix) :].startswith(quote * 3):
        return [line]
    lines, depth, cut = [], 0, None
    room = width - len(indent) - len(prefix) - 2
    start = 0
    for position, char in enumerate(text):
        depth += (char == "{") - (char == "}")
        if char == " " and depth == 0 and position - start < room:
            cut = position + 1  # the space ends the first part
        if position - start >= room and cut is not None:
            lines.append(text[start:cut])
            start, cut = cut, None
    lines.append(text[start:])
    parts = [f"{indent}{prefix}{quote}{part}{quote}" for part in lines]
    parts[-1] += tail
    return parts


def fit_source(source: str, width: int = CODE_WIDTH) -> str:
    """Python ``source`` laid out in lines of at most ``width`` characters, to show: the code
    reformatted by ``ruff format`` at that width (where ruff is installed), then comments and
    docstrings wider than that wrapped, and a trailing comment that makes its line too wide
    moved above it. The code itself is unchanged; a line the formatter cannot shorten (a long
    string) stays as it is."""
    ruff = _ruff()
    if ruff is not None:
        done = subprocess.run(
            [ruff, "format", "--isolated", f"--line-length={width}", "-"],
            input=source,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            source = done.stdout.rstrip()
    lines = source.splitlines()
    docstring: set[int] = set()  # lines of a string that is a statement of its own
    strings: set[int] = set()  # lines that hold one string literal inside brackets, alone
    comments: dict[int, int] = {}  # line -> column of its comment
    assigned: dict[int, int] = {}  # line -> column of the string a name is set to
    statement_start = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, None)
    previous = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source + "\n").readline):
            (first, column), (last, end) = token.start, token.end
            if token.type == tokenize.COMMENT:
                comments[first - 1] = column
            elif token.type == tokenize.STRING and previous in statement_start:
                docstring.update(range(first - 1, last))
            elif token.type == tokenize.STRING and first == last:
                line = lines[first - 1]
                before, after = line[:column].strip(), line[end:].strip()
                if not before and after in ("", ",", ")", "),"):
                    strings.add(first - 1)
                elif re.fullmatch(r"[\w.]+ =", before) and not after:  # name = "..."
                    assigned[first - 1] = column
            if token.type not in (tokenize.NL, tokenize.COMMENT):
                previous = token.type
    except (tokenize.TokenError, SyntaxError):  # not Python after all: shown as it is
        return source

    def refill(paragraph: list[str], prefix: str) -> list[str]:
        """Lines of one docstring or comment paragraph, refilled if one is too wide."""
        if max(len(line) for line in paragraph) <= width:
            return paragraph
        text = " ".join(line.strip().removeprefix("#").strip() for line in paragraph)
        return textwrap.wrap(
            text, width, initial_indent=prefix, subsequent_indent=prefix,
            break_long_words=False, break_on_hyphens=False,
        )  # fmt: skip

    fitted: list[str] = []
    paragraph: list[str] = []
    prefix = ""
    quotes = ('"""', "'''")
    for index, line in enumerate([*lines, ""]):
        indent = line[: len(line) - len(line.lstrip())]
        stripped = line.strip()
        alone = index in comments and not line[: comments[index]].strip()
        # the next line of a paragraph: the same kind, the same indent, no new list item
        kind = "#" if alone else ("doc" if index in docstring else None)
        if kind == "doc" and (not stripped or stripped in quotes):
            kind = None
        new = kind is None or stripped.startswith(("- ", "* ", ">>>"))
        own = indent + ("# " if alone else "")
        if paragraph and (new or own != prefix):
            fitted += refill(paragraph, prefix)
            paragraph = []
        if kind is not None:
            prefix = own
            paragraph.append(line)
        elif index < len(lines):
            if index in comments and len(line) > width:  # a trailing comment goes above
                code, comment = line[: comments[index]].rstrip(), line[comments[index] :]
                fitted += refill([indent + comment], indent + "# ") + [code]
            elif index in strings and len(line) > width:
                fitted += _split_string(line, width)
            elif index in assigned and len(line) > width:  # name = (the string, split)
                inner = _split_string(indent + "    " + line[assigned[index] :], width)
                if len(inner) > 1:
                    fitted += [line[: assigned[index]] + "(", *inner, indent + ")"]
                else:
                    fitted.append(line)
            else:
                fitted.append(line)
    return "\n".join(fitted)


def show_test(name: str, path: str = "tests/test_training.py"):
    """The source of the test function ``name`` in ``path`` (relative to the repository), with
    its decorators, laid out like :func:`show_source`."""
    source = (REPO_ROOT / path).read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = source.splitlines()[first - 1 : node.end_lineno]
            text = fit_source("\n".join(lines))
            return Markdown(f"`{path}`:\n\n```python\n{text}\n```")
    raise ValueError(f"{path} has no test {name!r}")
