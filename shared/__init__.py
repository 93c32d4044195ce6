"""clipline's common library: contracts, config, telemetry, provider port, registry."""
