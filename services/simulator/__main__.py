"""Run the simulator: `python -m services.simulator` (settings from CLIPLINE_SIM_*)."""

from __future__ import annotations

import uvicorn

from services.simulator.app import build_app
from services.simulator.journal import JournalError
from services.simulator.settings import SimulatorSettings
from shared.config import ConfigError, load_settings


def main() -> None:
    settings = load_settings(SimulatorSettings)
    try:
        app = build_app(settings)
    except JournalError as exc:
        # One line and exit 1, like any other bad setting: a supervisor restarting the process
        # sees the same clear message each time, never a traceback.
        raise ConfigError(f"configuration error: CLIPLINE_SIM_STATE_DIR: {exc}") from None
    # uvloop + httptools, no access log, no proxy-header middleware (it wraps every request and
    # the simulator is never behind a proxy), no `server: uvicorn` header (the real API sends
    # none): the simulator must be much faster than the pipeline it serves (make bench).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
