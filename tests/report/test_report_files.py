from __future__ import annotations

from pathlib import Path

from PIL import Image

from lightning_client.report import ResultRow, write_contact_sheets, write_report


def _valid_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_write_report_writes_every_artefact(tmp_path: Path, run_rows: list[ResultRow]) -> None:
    files = write_report(run_rows, tmp_path, title="Test run", notes=["sandbox: yes"])
    assert files.missing == []
    assert [p.name for p in files.plots] == ["latency_cdf.png", "cost_per_image.png", "latency_breakdown.png"]
    for plot in files.plots:
        width, height = _valid_png(plot)
        assert width > 300 and height > 100
    assert len(files.contact_sheets) == 2  # one per prompt
    text = files.markdown.read_text()
    assert text.startswith("# Test run")
    assert "| replicate | 4 | 4 | 75% | 2.10 s |" in text
    assert "| fal | 4 | 3 | 100% |" in text
    assert "ProviderUnavailableError x1" in text
    assert "](plots/latency_cdf.png)" in text and "](contact_sheets/01-a-cat.png)" in text
    assert files.csv.exists() and files.json.exists()


def test_contact_sheet_puts_providers_side_by_side(tmp_path: Path, run_rows: list[ResultRow]) -> None:
    cat_rows = [r for r in run_rows if r.prompt == "a cat"]
    (sheet,) = write_contact_sheets(cat_rows, tmp_path, tmp_path / "sheets")
    width, height = _valid_png(sheet)
    with Image.open(sheet) as image:
        rgb = image.convert("RGB")
        # Column 1 is replicate (red tiles), column 2 fal (blue tiles), one row per repeat.
        left = rgb.getpixel((12 + 224 // 2, height - 34 - 12 - 224 // 2))
        right = rgb.getpixel((12 + 224 + 12 + 224 // 2, height - 34 - 12 - 224 // 2))
    assert left == (200, 30, 30) and right == (30, 30, 200)
    assert width == 12 + 2 * (224 + 12)


def test_missing_image_gets_a_placeholder_tile(tmp_path: Path) -> None:
    rows = [ResultRow(job="j", prompt="p", provider="fal", steps=4, outcome="failed", error_type="RateLimitError")]
    (sheet,) = write_contact_sheets(rows, tmp_path, tmp_path)
    _valid_png(sheet)
