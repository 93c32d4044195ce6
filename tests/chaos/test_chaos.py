"""The chaos suite at CI size: every scenario on one stack (replicas of the services), a few
jobs each.

40 jobs per scenario arriving over 10 s, 4 service kills at random moments, S3 down 15 s (the
full size, `make chaos`, runs 500 jobs and 90 s), on a 3-node NATS cluster like `make chaos`
(2 node kills in the nats-node scenario; CHAOS_NATS_CLUSTER=1: one nats-server, that scenario
skipped). Fails on any
lost job, duplicate create or terminal event, spend mismatch or budget overshoot, and when a
scenario's faults did not strike (so a pass means the jobs met them). The seed is CHAOS_SEED,
else random; printed.
"""

from __future__ import annotations

import os
import secrets

import pytest

from tests.chaos.run import Settings, run
from tests.chaos.verdict import table

pytestmark = pytest.mark.e2e
STRUCK = {
    "services-kill": "kill -9 ",
    "nats-node": "kill -9 nats-",
    "s3-outage": "kill -9 seaweedfs",
    "upstream-faults": "429 storms",
    "pricing-guard-kill": "kill -9 pricing_guard-2",
    "all-together": "kill -9 seaweedfs",
}


@pytest.mark.timeout(900)  # a passing run takes ~2 min; a lost job waits out its deadline
def test_chaos_small(capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or secrets.randbelow(10**6))
    cluster = int(os.environ.get("CHAOS_NATS_CLUSTER") or 3)
    settings = Settings(jobs=40, seed=seed, s3_outage=15.0, kills=4, rate=4.0, nats_cluster=cluster)
    with capsys.disabled():
        print(f"\n[chaos] seed {seed}: {settings.jobs} jobs per scenario")
        verdicts = run(settings, lambda line: print(f"[chaos] {line}", flush=True))
        print(table(verdicts))
    expected = [s for s in settings.scenarios if cluster > 1 or s != "nats-node"]
    assert [v.scenario for v in verdicts] == expected
    for v in verdicts:
        assert v.ok, f"{v.scenario} (seed {seed}): {v.problems()}"
        assert v.done > 0, v
        assert any(STRUCK[v.scenario] in line for line in v.faults), (v.scenario, v.faults)
        # The budget fits all but a tenth of the jobs: it was hit, and refused some.
        assert v.failed.get("rejected budget_exceeded", 0) > 0, v.failed
