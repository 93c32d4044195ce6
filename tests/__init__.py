"""clipline tests."""
