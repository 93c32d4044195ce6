"""Security tests: each breach of issue 17 tried again, against real servers."""
