"""shared/metrics.py: a process with CLIPLINE_METRICS_PORT serves its instruments for
Prometheus; a busy port is a clear configuration error; names follow the catalogue."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

from clipline.servers import free_port
from shared import metrics

SCRIPT = """
import sys
from shared import metrics
server = metrics.start("intake", "127.0.0.1", int(sys.argv[1]))
metrics.JOB_TRANSITIONS.add(1, {"from_state": "", "to_state": "accepted", "tenant": "acme"})
metrics.COST_SETTLED.add(400000, {"tenant": "acme", "provider": "simulator", "model": "sora-2"})
metrics.STAGE_DURATION.record(0.2, {"stage": "queued"})
metrics.BUDGET_UTILISATION.set(0.25, {"scope": "tenant", "tenant": "acme", "window": "day"})
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_process_serves_its_instruments_under_the_catalogue_names() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        try:
            assert proc.stdout.readline().strip() == "ready"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert any(
        line.startswith("clipline_job_transitions_total{") and 'to_state="accepted"' in line
        for line in lines
    )
    assert any(
        line.startswith("clipline_cost_settled_micros_total{") and line.endswith(" 400000.0")
        for line in lines
    )
    assert any(line.startswith("clipline_stage_duration_seconds_bucket{") for line in lines)
    assert any(
        line.startswith("clipline_budget_utilisation_ratio{") and line.endswith(" 0.25")
        for line in lines
    )
    assert "target_info{" in text
    assert 'service_name="intake"' in text


def test_a_busy_port_is_a_configuration_error_that_names_the_setting() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(port)],
            check=False, capture_output=True, text=True, timeout=30, input="",
        )  # fmt: skip
    assert done.returncode != 0
    assert "CLIPLINE_METRICS_PORT" in done.stderr
    assert f"127.0.0.1:{port}" in done.stderr


def test_without_a_port_nothing_is_served_and_recording_is_harmless() -> None:
    assert metrics.start("intake", "127.0.0.1", None) is None
    metrics.JOB_TRANSITIONS.add(1, {"to_state": "accepted"})  # the no-op provider
