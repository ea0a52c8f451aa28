"""The README and the pages in docs/ stay true: their Python runs and their links lead somewhere.

Every ```python block in README.md and docs/*.md runs here, as written, in a child interpreter with
warnings as errors, on SQLite (a file in its own working directory or ``sqlite://:memory:``), and
must exit 0. Printed output is checked against the block's comments: ``print(...)  # text`` means
the line ``text`` appears in stdout, and so does each comment line right below a ``print(...)``
line that has no comment of its own. A block that cannot run alone (it needs PostgreSQL, a task
module, an event loop around it) is marked ```python fragment and is only compiled (top-level
``await`` allowed, as in ``python -m asyncio``). Every relative link points at a file that exists,
and every ``#anchor`` at a heading of that file.

This file took over test_readme_resilience.py when the README's "Retries, timeouts, trigger
rules, skipping and cancellation" section moved to docs/retries.md: its five examples still run
(``test_block_runs``) and ``test_retries_page_has_its_examples`` still counts them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

from backend import IS_SQLITE

ROOT = Path(__file__).resolve().parent.parent
RUN_SECONDS = 60
RETRIES_PAGE = "docs/retries.md"


class Block(NamedTuple):
    id: str          # "docs/retries.md:2": the file and the block's number in it, from 1
    fragment: bool
    code: str


def doc_files() -> List[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    docs = ROOT / "docs"
    if docs.is_dir():
        files += sorted(docs.glob("*.md"))
    return [f for f in files if f.is_file()]


FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks() -> List[Block]:
    blocks = []
    for path in doc_files():
        number = 0
        for match in FENCE.finditer(path.read_text(encoding="utf-8")):
            info = match.group(1).split()
            if not info or info[0] != "python":
                continue
            number += 1
            blocks.append(Block(f"{path.relative_to(ROOT).as_posix()}:{number}", info[1:] == ["fragment"],
                                match.group(2)))
    return blocks


BLOCKS = python_blocks()
RUNNABLE = [b for b in BLOCKS if not b.fragment]


def expected_lines(code: str) -> List[str]:
    """What stdout must contain: `print(...)  # text`, and comment lines right below a bare print."""
    expected = []
    lines = code.splitlines()
    for i, line in enumerate(lines):
        inline = re.search(r"print\(.*\)\s*#\s*(.+)", line)
        if inline:
            expected.append(inline.group(1).strip())
        elif re.search(r"^\s*print\(.*\)\s*$", line):
            for below in lines[i + 1:]:
                comment = re.match(r"^\s*#\s*(.+)", below)
                if not comment:
                    break
                expected.append(comment.group(1).strip())
    return expected


def test_the_docs_have_python_blocks():
    if not doc_files():
        pytest.skip("README.md and docs/ not present next to python-tests/")
    assert RUNNABLE, "no runnable python block found in README.md or docs/*.md"


def test_every_python_fence_is_python_or_fragment():
    """```py, ```python3 or ```python frgment would be neither run nor compiled: refuse them."""
    wrong = []
    for path in doc_files():
        for match in FENCE.finditer(path.read_text(encoding="utf-8")):
            info = match.group(1).split()
            if info and info[0].startswith("py") and info not in (["python"], ["python", "fragment"]):
                wrong.append(f"{path.name}: ```{match.group(1)}")
    assert not wrong, wrong


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_compiles(block):
    compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.skipif(not IS_SQLITE, reason="the documentation's examples use SQLite")
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs(tmp_path, subprocess_env, block):
    env: Dict[str, str] = dict(subprocess_env, CLOACINA_BACKEND="sqlite")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", block.code], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=RUN_SECONDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = [line.strip() for line in proc.stdout.splitlines()]
    for line in expected_lines(block.code):
        assert line in printed, (line, proc.stdout)


def test_retries_page_has_its_examples():
    """Retries with backoff, a timeout, trigger rules, SkipTask, and cancellation: five examples."""
    page = ROOT / RETRIES_PAGE
    if not page.is_file():
        pytest.skip(f"{RETRIES_PAGE} not present next to python-tests/")
    on_page = [b for b in RUNNABLE if b.id.startswith(RETRIES_PAGE + ":")]
    assert len(on_page) == 5
    assert all(expected_lines(b.code) for b in on_page), "each example prints what its comments say"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> List[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)]


def relative_links() -> List[tuple]:
    links = []
    for path in doc_files():
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if not re.match(r"^[a-z]+:", target):
                links.append((path, target))
    return links


@pytest.mark.parametrize("source,target", relative_links(),
                         ids=[f"{p.relative_to(ROOT).as_posix()}->{t}" for p, t in relative_links()])
def test_relative_link_resolves(source, target):
    file_part, _, anchor = target.partition("#")
    resolved = (source.parent / file_part).resolve() if file_part else source
    assert resolved.exists(), f"{source.name}: {target} -> {resolved} does not exist"
    if anchor:
        assert resolved.suffix == ".md", f"{source.name}: anchor on a non-markdown target {target}"
        assert anchor in anchors(resolved), f"{source.name}: no heading for #{anchor} in {resolved.name}"
