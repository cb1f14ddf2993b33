"""With OpenTelemetry installed but no provider set, the package imports and costs nothing of it."""

from __future__ import annotations

import subprocess
import sys

GENERATE = (
    "from lightning_client.testing import Sandbox\n"
    "with Sandbox() as sb:\n"
    "    gen = lc.FalGenerator(api_key='fal-test', base_url=sb.fal_url)\n"
    "    gen.generate('x', width=256, height=256)\n"
    "    router = lc.Router([gen])\n"
    "    router.generate('x', width=256, height=256)\n"
    "    router.close()\n"
)


def _modules_after(code: str) -> list[str]:
    report = "print(','.join(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'mcp')))))"
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}{report}"], capture_output=True, text=True, check=True
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_and_generate_load_no_opentelemetry_or_mcp_module() -> None:
    assert _modules_after("import lightning_client as lc\n" + GENERATE) == []


def test_with_the_api_imported_and_no_provider_set_no_sdk_module_is_loaded() -> None:
    loaded = _modules_after(
        "import opentelemetry.trace, opentelemetry.metrics\nimport lightning_client as lc\n" + GENERATE
    )
    assert "opentelemetry.trace" in loaded
    assert [m for m in loaded if m.startswith("opentelemetry.sdk")] == []
