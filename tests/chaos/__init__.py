"""The chaos suite: jobs through the embedded stack while faults run together (`make chaos`)."""
