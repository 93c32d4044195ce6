"""Run the simulator: `python -m services.simulator` (settings from CLIPLINE_SIM_*)."""

from __future__ import annotations

import uvicorn

from services.simulator.app import build_app
from services.simulator.settings import SimulatorSettings


def main() -> None:
    settings = SimulatorSettings()
    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
