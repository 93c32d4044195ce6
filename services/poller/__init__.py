"""poller package."""
