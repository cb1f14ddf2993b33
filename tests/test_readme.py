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
