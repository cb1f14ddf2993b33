"""The provider registry: built-in kinds, case-insensitive lookup, and providers added by other packages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.registry import ENTRY_POINT_GROUP, generator_class, provider_kinds

ROOT = Path(__file__).resolve().parents[1]

#: A provider package as a third party would ship it: one module and an entry point, nothing here changed.
PLUGIN_MODULE = '''
"""A provider that draws a solid colour, registered through the lightning_client.providers entry point."""

import io

from PIL import Image

from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities, ProviderOption
from lightning_client.result import GeneratedImage


class AcmeGenerator(BaseGenerator):
    kind = "acme"
    latency_prior_s = 0.01
    options = (ProviderOption("color", "Fill colour."),)

    def __init__(self, *, name=None, color="red", model="acme/solid"):
        self.name = self._check_name(name)
        self.model = model
        self.color = color

    @property
    def capabilities(self):
        return Capabilities()

    async def _generate(self, ctx: AttemptContext):
        req = ctx.request
        buffer = io.BytesIO()
        Image.new("RGB", (req.width, req.height), self.color).save(buffer, format="PNG")
        image = GeneratedImage(data=buffer.getvalue(), width=req.width, height=req.height, content_type="image/png")
        return ctx.result([image] * req.num_images, model=self.model)
'''


def write_plugin(folder: Path) -> Path:
    """Install the plugin into `folder` the way pip lays out a wheel: module plus dist-info with entry points."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "acme_lightning.py").write_text(PLUGIN_MODULE)
    info = folder / "acme_lightning-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-lightning\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nacme = acme_lightning:AcmeGenerator\n")
    return folder


def run_python(code: str, plugin_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_built_in_kinds_are_registered_and_case_insensitive() -> None:
    assert {"replicate", "fal", "local"} <= set(provider_kinds())
    assert generator_class("replicate") is lc.ReplicateGenerator
    assert generator_class("FAL") is lc.FalGenerator
    assert generator_class(" Local ") is lc.LocalGenerator
    for kind in ("replicate", "fal", "local"):
        assert generator_class(kind).kind == kind


def test_an_unknown_kind_lists_every_valid_choice() -> None:
    with pytest.raises(lc.UnknownProviderError) as info:
        generator_class("replikate")
    assert isinstance(info.value, ValueError)
    for kind in provider_kinds():
        assert kind in info.value.message
    assert "'replikate'" in info.value.message


def test_a_package_registers_a_provider_through_the_entry_point(tmp_path: Path) -> None:
    plugins = write_plugin(tmp_path / "site")
    code = textwrap.dedent(
        """
        import lightning_client as lc
        from lightning_client.registry import generator_class, provider_kinds
        cls = generator_class("ACME")
        assert "acme" in provider_kinds(), provider_kinds()
        gen = cls(color="blue")
        result = gen.generate("a cat", width=64, height=64)
        print(cls.__name__, result.provider, result.images[0].to_pil().getpixel((0, 0)))
        """
    )
    done = run_python(code, plugins)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AcmeGenerator", "acme", "(0,", "0,", "255)"]


def test_a_plugin_provider_is_usable_by_name_from_the_cli(tmp_path: Path) -> None:
    plugins = write_plugin(tmp_path / "site")
    done = run_python(
        "",
        plugins,
        "-m",
        "lightning_client",
        "generate",
        "a cat",
        "--provider",
        "ACME",
        "--size",
        "64x64",
        "--out",
        "out",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "acme" in done.stdout and list((tmp_path / "out").glob("acme-*.png"))
