"""Figures quoted in docs/*.md come from benchmarks/results/, each in one generated section."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _doc_numbers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("doc_numbers", ROOT / "benchmarks" / "doc_numbers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_match_the_results() -> None:
    stale = _doc_numbers().stale(ROOT / "docs")
    assert not stale, f"run `python benchmarks/doc_numbers.py`: {stale}"


def test_every_section_is_used_once_and_names_its_run() -> None:
    numbers = _doc_numbers()
    text = "\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    used = re.findall(r"<!-- BEGIN GENERATED: doc_numbers\.py ([a-z_]+) -->", text)
    assert sorted(used) == sorted(numbers.SECTIONS)  # each measurement quoted in one place
    for render in numbers.SECTIONS.values():
        assert re.search(r"20\d\d-\d\d-\d\d", render())  # with the date of its run


def test_a_changed_result_shows_as_stale(tmp_path: Path) -> None:
    numbers = _doc_numbers()
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- BEGIN GENERATED: doc_numbers.py failover -->\nold\n<!-- END GENERATED: doc_numbers.py failover -->\n"
    )
    assert numbers.stale(tmp_path) == [doc]
    numbers.update(tmp_path)
    assert numbers.stale(tmp_path) == [] and "router overhead" in doc.read_text()
