"""Provider-specific code lives in its provider's module: the layers above never name a provider.

Routing, the ledger, reports and the CLI find providers through the registry, so adding one is a
module and a registry entry. This test reads their source for any registered kind as a word
(identifier parts included: `fal_url`, `FalGenerator`, `REPLICATE_API_TOKEN` all count).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lightning_client.registry import provider_kinds

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_client"
#: Identifier and word parts: "FalGenerator" -> Fal, Generator; "fal_url" -> fal, url; "FAL_KEY" -> FAL, KEY.
_PARTS = re.compile(r"[A-Z]{2,}(?![a-z])|[A-Z]?[a-z]+|[A-Z]+")


def mentions(path: Path, kinds: set[str]) -> list[str]:
    """'file:line: word' for every provider kind named in `path`."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for part in _PARTS.findall(line):
            if part.lower() in kinds:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {part}: {line.strip()}")
    return found


#: The demo is a scripted tour of the sandbox: it degrades one emulated provider by name and says so.
EXEMPT = {PACKAGE / "cli" / "demo.py"}


def sources(target: str) -> list[Path]:
    path = PACKAGE / target
    return sorted(set(path.rglob("*.py")) - EXEMPT) if path.is_dir() else [path]


@pytest.mark.parametrize(
    "target",
    [
        "routing",
        "ledger.py",
        "report",
        "cli",
    ],
)
def test_no_provider_is_named_outside_its_module(target: str) -> None:
    # "remote" (a lightning-client server as a provider) is also the generic word for a provider's
    # jobs ("remote job id"), which these layers rightly use; every other kind is checked.
    kinds = set(provider_kinds()) - {"remote"}
    assert {"replicate", "fal", "local"} <= kinds
    found = [line for path in sources(target) for line in mentions(path, kinds)]
    assert not found, "provider names outside the providers:\n" + "\n".join(found)


def test_the_check_sees_a_provider_name() -> None:
    here = Path(__file__)
    assert mentions(here, {"fal"})  # this file names FalGenerator in its docstring
