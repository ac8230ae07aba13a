"""Every ```python block of README.md runs as written, each in a fresh interpreter.

A block that cannot run on its own (it needs a cluster, a database URL, ...) is preceded by
``<!-- sketch: the reason -->``; a block that takes more than a few seconds by
``<!-- slow -->``. Also runs the docstring examples under ``benchmarks/``, which the
``--doctest-modules`` collection does not reach.
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARK = re.compile(r"^<!--\s*(sketch|slow)\b:?\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    section: str  # the nearest heading above it
    code: str
    marks: dict[str, str]  # "sketch"/"slow" -> the reason given (may be empty)


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, with the marker comments just above them."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section, i = "top", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            section = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise AssertionError(f"README.md:{i + 1}: unclosed code fence")
        if fence.group(1) == "python":
            marks: dict[str, str] = {}
            j = i - 1
            while j >= 0 and (not lines[j].strip() or _MARK.match(lines[j].strip())):
                m = _MARK.match(lines[j].strip())
                if m:
                    marks[m.group(1)] = m.group(2)
                j -= 1
            blocks.append(Block(i + 1, section, "\n".join(lines[i + 1 : end]) + "\n", marks))
        i = end + 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def _param(block: Block):
    slug = re.sub(r"[^a-z0-9]+", "-", block.section.lower()).strip("-")[:40]
    marks = [pytest.mark.slow] if "slow" in block.marks else []
    if "sketch" in block.marks:
        marks.append(pytest.mark.skip(reason=f"sketch: {block.marks['sketch']}"))
    return pytest.param(block, id=f"{BLOCKS.index(block)}-{slug}", marks=marks)


def test_parser_finds_every_python_block() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) == len(re.findall(r"^```python\s*$", text, flags=re.M)) >= 5
    sample = "# A\n<!-- sketch: needs a cluster -->\n\n```python\nx = 1\n```\n```bash\nls\n```\n"
    (block,) = python_blocks(sample)
    assert (block.line, block.section, block.code) == (4, "A", "x = 1\n")
    assert block.marks == {"sketch": "needs a cluster"}


def test_sketches_say_why() -> None:
    for b in BLOCKS:
        if "sketch" in b.marks:
            assert b.marks["sketch"], f"README.md:{b.line}: give the reason: <!-- sketch: why -->"


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    # One thread: the snippets' models are tiny, and CI has two cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("PYTHONPATH", None)  # as a user runs it: the installed autolr, from any folder
    timeout = 600 if "slow" in block.marks else 240
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,  # anything a snippet writes lands here
    )
    assert out.returncode == 0, (
        f"README.md:{block.line} ({block.section}) failed:\n"
        + out.stdout[-1500:]
        + out.stderr[-3000:]
    )


def _benchmark_modules_with_examples() -> list[str]:
    return sorted(
        p.stem for p in (ROOT / "benchmarks").glob("*.py") if ">>>" in p.read_text("utf-8")
    )


@pytest.mark.parametrize("module", _benchmark_modules_with_examples())
def test_benchmark_docstring_examples(module: str) -> None:
    mod = importlib.import_module(f"autolr.bench.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result
