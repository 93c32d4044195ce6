"""Operator tooling: the `clipline` CLI and the embedded local stack."""
