"""Run the simulator: `python -m services.simulator` (settings from CLIPLINE_SIM_*)."""

from __future__ import annotations

import uvicorn

from services.simulator.app import build_app
from services.simulator.journal import JournalError
from services.simulator.settings import LogSettings, SimulatorSettings
from shared import metrics
from shared.config import ConfigError, MetricsSettings, load_settings
from shared.logs import configure_logging


def main() -> None:
    logs = load_settings(LogSettings)
    configure_logging(logs.log_level, logs.log_format)
    settings = load_settings(SimulatorSettings)
    where = load_settings(MetricsSettings)
    metrics.start("simulator", where.host, where.port)
    try:
        app = build_app(settings)
    except JournalError as exc:
        # One line and exit 1, like any other bad setting: a supervisor restarting the process
        # sees the same clear message each time, never a traceback.
        raise ConfigError(f"configuration error: CLIPLINE_SIM_STATE_DIR: {exc}") from None
    # uvloop + httptools, no access log, no proxy-header middleware (it wraps every request and
    # the simulator is never behind a proxy), no `server: uvicorn` header (the real API sends
    # none): the simulator must be much faster than the pipeline it serves (make bench).
    # log_config=None: uvicorn's loggers go through the root handler set up above (format, file
    # and size cap), instead of uvicorn installing its own stderr handlers.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=logs.log_level.lower(),
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
