"""The Ray Serve worker pool on a local Ray cluster started here: replica ids, replica death, spill-over."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

pytest.importorskip("ray.serve", reason="the ray extra is part of the dev environment")
pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

import ray
from ray import serve

import lightning_client as lc
from lightning_client.assembly import hosted_generator
from lightning_client.serving.ray import RayAppConfig, RaySettings, make_config, worker_pool
from lightning_client.serving.ray_pool import LocalWorker
from lightning_client.testing import Sandbox
from lightning_client.testing.tiny import TinyLightning, build_tiny_lightning

REPLICAS = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def app_config(tiny: TinyLightning) -> RayAppConfig:
    settings = RaySettings(replicas=REPLICAS, num_cpus=1, max_batch_size=2)
    return make_config(settings, local_model=tiny.root, device="cpu")


@pytest.fixture(scope="module")
def workers(app_config: RayAppConfig) -> Iterator[serve.handle.DeploymentHandle]:
    """A 2-replica worker deployment on a Ray cluster of 2 CPUs, all of it stopped afterwards."""
    ray.init(
        num_cpus=REPLICAS,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    try:
        deployment = serve.deployment(
            LocalWorker, name="LocalWorker", **app_config.ray.worker_options(app_config.device)
        )
        # Not waiting for the replicas to start: the first test's requests meet a cold start.
        target = serve.RunTarget(
            deployment.bind(app_config.worker_spec().model_dump()), name="lightning-test", route_prefix=None
        )
        [handle] = serve.run_many([target], wait_for_applications_running=False)
        yield handle
    finally:
        serve.shutdown()
        ray.shutdown()


def request(seed: int, **fields: object) -> lc.GenerationRequest:
    values: dict[str, object] = {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": seed}
    return lc.GenerationRequest.model_validate({**values, **fields})


async def test_a_cold_start_is_a_queue_wait_within_the_deadline(
    workers: serve.handle.DeploymentHandle, app_config: RayAppConfig
) -> None:
    assert replica_counts().get("RUNNING", 0) < REPLICAS  # still starting
    pool = worker_pool(workers, app_config)
    result = await pool.agenerate(request(0, timeout_s=150))
    assert result.attempts[0].outcome == "succeeded" and result.served_by is not None
    assert result.timings.total_s is not None and result.timings.total_s > result.timings.inference_s
    await pool.aload()  # /readyz: every replica is reachable
    assert len(pool.replicas) == REPLICAS
    await pool.aclose()


async def test_results_name_the_replica_that_served_them(
    workers: serve.handle.DeploymentHandle, app_config: RayAppConfig
) -> None:
    pool = worker_pool(workers, app_config)
    results = await asyncio.gather(*(pool.agenerate(request(seed)) for seed in range(8)))
    served = {r.served_by for r in results}
    assert len(served) == REPLICAS
    assert all(s is not None and s.startswith("SERVE_REPLICA::lightning-test#LocalWorker#") for s in served)
    for result in results:
        assert result.attempts[0].served_by == result.served_by
        assert result.attempts[0].outcome == "succeeded"
        assert result.images[0].width == 64
    assert set(pool.replicas) <= served
    await pool.aclose()


def replica_counts(app: str = "lightning-test") -> dict[str, int]:
    states = serve.status().applications[app].deployments["LocalWorker"].replica_states
    return {str(k): v for k, v in states.items()}


async def wait_for_running(replicas: int, timeout_s: float = 90.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while replica_counts().get("RUNNING", 0) < replicas:
        assert loop.time() < deadline, f"replicas not restarted: {replica_counts()}"
        await asyncio.sleep(0.5)


async def test_a_replica_killed_mid_burst_fails_only_retryably_and_every_attempt_is_in_the_ledger(
    workers: serve.handle.DeploymentHandle, app_config: RayAppConfig
) -> None:
    pool = worker_pool(workers, app_config)
    ledger = lc.Ledger()
    router = lc.Router([pool], ledger=ledger, retries=4, backoff=lambda state: 0.2, breaker=False)
    victim = (await pool.agenerate(request(0))).served_by
    assert victim is not None
    burst = [asyncio.create_task(router.agenerate(request(seed, width=128, height=128, steps=4))) for seed in range(8)]
    for _ in range(1000):  # until the victim's polled queue depth shows it holds requests
        await pool.refresh_expected_wait()
        if victim in pool.replicas and pool.replicas[victim].ongoing:
            break
        await asyncio.sleep(0.02)
    ray.kill(ray.get_actor(victim, namespace="serve"))
    outcomes = await asyncio.gather(*burst, return_exceptions=True)

    attempts: list[lc.Attempt] = []
    for outcome in outcomes:
        if isinstance(outcome, lc.GenerationResult):
            attempts += outcome.attempts
        else:
            assert isinstance(outcome, lc.LightningError), repr(outcome)
            attempts += getattr(outcome, "attempts", [])
    failed = [a for a in attempts if a.outcome == "failed"]
    assert failed, "the killed replica held requests, so some attempt failed"
    assert {a.error_type for a in failed} == {"ProviderUnavailableError"}
    assert all(a.retryable for a in failed)
    assert any(isinstance(o, lc.GenerationResult) and o.served_by != victim for o in outcomes)
    recorded = {a.attempt_id: a for a in ledger.records()}
    assert sorted(recorded) == sorted(a.attempt_id for a in attempts)
    assert all(a.outcome is not None for a in recorded.values())

    await wait_for_running(REPLICAS)  # Serve replaced the replica
    fresh = await asyncio.gather(*(pool.agenerate(request(seed)) for seed in range(6)))
    assert victim not in {r.served_by for r in fresh}
    await router.aclose()


async def test_a_saturated_pool_spills_over_to_the_hosted_provider_naming_the_expected_wait(
    workers: serve.handle.DeploymentHandle, app_config: RayAppConfig, lightning_sandbox: Sandbox
) -> None:
    pool = worker_pool(workers, app_config)
    await asyncio.gather(*(pool.agenerate(request(seed)) for seed in range(4)))  # replicas' job times observed
    router = lc.Router([pool, hosted_generator("fal", lightning_sandbox)], ledger=lc.Ledger(), max_wait_s=0.05)
    load = [asyncio.create_task(pool.agenerate(request(seed))) for seed in range(12)]
    for _ in range(1000):  # every request of the load handed to the pool
        if pool.in_flight == len(load):
            break
        await asyncio.sleep(0.001)
    busy = pool.expected_wait_s()
    assert busy is not None and busy > 0.05

    result = await router.agenerate(request(99, width=256, height=256))  # a size both can serve

    assert result.provider == "fal" and result.served_by is None
    skipped = [a for a in result.attempts if a.outcome == "skipped"]
    assert [a.provider for a in skipped] == ["local"]
    match = re.search(r"expected wait (\d+\.\d+)s above max_wait_s=0.05s", skipped[0].note or "")
    assert match is not None, skipped[0].note
    assert float(match.group(1)) > 0.05
    assert all(r.served_by is not None for r in await asyncio.gather(*load))
    await router.aclose()
