"""Figures quoted in docs/*.md come from benchmarks/results/, each in one generated section."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
DOC_NUMBERS = "benchmarks/doc_numbers.py"


def test_generated_sections_match_the_results(script_module: Callable[[str], ModuleType]) -> None:
    stale = script_module(DOC_NUMBERS).stale(ROOT / "docs")
    assert not stale, f"run `python benchmarks/doc_numbers.py`: {stale}"


def test_every_section_is_used_once_and_names_its_run(script_module: Callable[[str], ModuleType]) -> None:
    numbers = script_module(DOC_NUMBERS)
    text = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    used = re.findall(r"<!-- BEGIN GENERATED: doc_numbers\.py ([a-z_]+) -->", text)
    assert sorted(used) == sorted(numbers.SECTIONS)  # each measurement quoted in one place
    for render in numbers.SECTIONS.values():
        assert re.search(r"20\d\d-\d\d-\d\d", render())  # with the date of its run


def test_a_changed_result_shows_as_stale(script_module: Callable[[str], ModuleType], tmp_path: Path) -> None:
    numbers = script_module(DOC_NUMBERS)
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- BEGIN GENERATED: doc_numbers.py failover -->\nold\n<!-- END GENERATED: doc_numbers.py failover -->\n"
    )
    assert numbers.stale(tmp_path) == [doc]
    numbers.update(tmp_path)
    assert numbers.stale(tmp_path) == [] and "router overhead" in doc.read_text()
