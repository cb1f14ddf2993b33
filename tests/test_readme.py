"""The README's offline examples run as written, and its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_sandbox_example_runs() -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "Sandbox()" in b)
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["result"].provider == "fal"  # type: ignore[attr-defined]


def test_invalid_request_example_holds() -> None:
    import lightning_client as lc

    assert 'GenerationRequest(prompt="a cat", steps=3)' in README
    with pytest.raises(lc.InvalidRequestError, match="1, 2, 4 or 8"):
        lc.GenerationRequest(prompt="a cat", steps=3)


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in README
    assert "\npython -m pytest\n" in ci
    assert "pip install torch==2.13.0" in README and "torch==2.13.0" in ci


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def test_the_local_fallback_example_prints_what_the_readme_shows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The block as written, with the sandbox's exports in the environment (both hosted answering 503),
    a tiny local pipeline instead of the real weights, and a small size so the CPU keeps up."""
    pytest.importorskip("diffusers")
    from lightning_client.testing import Sandbox, build_tiny_lightning

    section = _section("Local fallback")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    tiny = build_tiny_lightning(tmp_path / "tiny")
    local = f'lc.LocalGenerator(base_model="{tiny.root / "base"}", lightning_repo="{tiny.root / "lightning"}")'
    assert 'lc.LocalGenerator(device="cuda")' in code and "width=1024, height=1024" in code
    code = code.replace('lc.LocalGenerator(device="cuda")', local).replace(
        "width=1024, height=1024", "width=256, height=256"
    )
    with Sandbox() as sb:
        for name, value in sb.env().items():
            monkeypatch.setenv(name, value)
        sb.replicate.configure(error_status=503)
        sb.fal.configure(error_status=503)
        capsys.readouterr()
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        namespace["router"].close()  # type: ignore[attr-defined]
    printed = capsys.readouterr().out
    assert printed == shown, printed
