"""Recovery after a crash: a process SIGKILLed with a paid job running leaves enough behind to collect it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox

_CHILD = """
import sys
import lightning_client as lc

where, provider, url = sys.argv[1], sys.argv[2], sys.argv[3]
if provider == "replicate":
    generator = lc.ReplicateGenerator(api_key="r8_test", base_url=url)
else:
    generator = lc.FalGenerator(api_key="fal-test", base_url=url)
router = lc.Router([generator], ledger=lc.Ledger(where))
router.generate("a lighthouse at dusk", seed=11, output_format="png")
"""


def _generator(provider: str, sb: Sandbox) -> lc.ReplicateGenerator | lc.FalGenerator:
    if provider == "replicate":
        return lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url)
    return lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url)


def _started(ledger: lc.Ledger, with_id: bool) -> bool:
    """Whether the child's attempt row is written (with its job id when `with_id`) and still open."""
    return any(a.outcome is None and (a.remote_ids or not with_id) for a in ledger.records())


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
@pytest.mark.parametrize("provider", ["replicate", "fal"])
def test_a_job_of_a_killed_process_is_collected_by_recover(
    provider: str, store: str, request: pytest.FixtureRequest, sb: Sandbox, tmp_path: Path
) -> None:
    where = request.getfixturevalue("pg_url") if store == "postgresql" else str(tmp_path / "ledger.sqlite")
    emulated = sb.replicate if provider == "replicate" else sb.fal
    emulated.configure(inference_s=3.0)
    url = sb.replicate_url if provider == "replicate" else sb.fal_url
    child = subprocess.Popen([sys.executable, "-c", _CHILD, where, provider, url])
    # Replicate's create waits for the result (`Prefer: wait`), so its id is not known before the kill:
    # recovery finds the prediction by its input. fal's submit answers at once with the id.
    watcher = lc.Ledger(where)
    try:
        deadline = time.monotonic() + 120
        while not (emulated.stats().get("created") == 1 and _started(watcher, with_id=provider == "fal")):
            assert child.poll() is None, "the child ended before it was killed"
            assert time.monotonic() < deadline, "the job was never created and recorded"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        watcher.close()
    assert child.returncode == -signal.SIGKILL

    with lc.Router([_generator(provider, sb)], ledger=lc.Ledger(where)) as router:
        [recovered] = router.recover(tmp_path / "out", wait=True)
        assert router.recover() == []  # nothing is left to recover
        router.ledger.close()

    assert recovered.action == "collected" and recovered.result is not None
    assert len(recovered.result.images) == 1 and recovered.result.seed == 11
    assert [p.exists() for p in recovered.paths] == [True]
    assert emulated.stats()["created"] == 1  # never created again
    with lc.Ledger(where) as ledger:
        [attempt] = ledger.records()
    assert attempt.outcome == "succeeded" and attempt.num_images == 1
    assert attempt.cost.usd is not None and attempt.cost.usd > 0 and attempt.cost.basis
    assert attempt.attempt_id == recovered.attempt.attempt_id and attempt.request_id == recovered.result.request_id


def test_an_attempt_whose_create_never_answered_ends_unknown(pg_url: str, sb: Sandbox) -> None:
    with lc.Ledger(pg_url) as ledger:
        attempt = lc.Attempt(provider="fal", seed=3, steps=4)
        ledger.record("start", attempt)
        ledger.flush()
        ledger.store._execute("UPDATE attempts SET owner = NULL")  # as if its process had died
    with lc.Router([_generator("fal", sb)], ledger=lc.Ledger(pg_url)) as router:
        [recovered] = router.recover()
        router.ledger.close()
    assert recovered.action == "unknown" and recovered.attempt.cost.is_unknown
    assert sb.fal.stats().get("created", 0) == 0
    with lc.Ledger(pg_url) as ledger:
        assert [a.outcome for a in ledger.records()] == ["unknown"]


def test_ledger_recover_on_the_command_line(sb: Sandbox, tmp_path: Path) -> None:
    where = str(tmp_path / "ledger.sqlite")
    sb.fal.configure(inference_s=3.0)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, where, "fal", sb.fal_url])
    watcher = lc.Ledger(where)
    try:
        deadline = time.monotonic() + 120
        while not _started(watcher, with_id=True):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        watcher.close()
    config = tmp_path / "lightning.toml"
    config.write_text(f'[[generators]]\nkind = "fal"\napi_key = "fal-test"\nbase_url = "{sb.fal_url}"\n')
    out = tmp_path / "images"
    command = [sys.executable, "-m", "lightning_client.cli", "ledger", "recover", "--ledger", where]
    done = subprocess.run(
        [*command, "--config", str(config), "--out", str(out), "--wait"], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert "collected" in done.stdout and len(list(out.iterdir())) == 1
    assert sb.fal.stats()["created"] == 1
    with lc.Ledger(where) as ledger:
        assert [a.outcome for a in ledger.records()] == ["succeeded"]


def test_a_job_still_running_is_cancelled_unless_waited_for(pg_url: str, sb: Sandbox) -> None:
    sb.fal.configure(inference_s=30.0)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, pg_url, "fal", sb.fal_url])
    watcher = lc.Ledger(pg_url)
    try:
        deadline = time.monotonic() + 120
        while not _started(watcher, with_id=True):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        watcher.close()
    with lc.Router([_generator("fal", sb)], ledger=lc.Ledger(pg_url)) as router:
        [recovered] = router.recover()
        router.ledger.close()
    assert recovered.action == "canceled" and recovered.result is None
    assert sb.fal.stats()["created"] == 1
    with lc.Ledger(pg_url) as ledger:
        [attempt] = ledger.records()
    assert attempt.outcome == "canceled" and attempt.cost.basis
