"""NATS errors that mean "not answering now", as opposed to "answered no": retried, or a 503."""

from __future__ import annotations

import nats.errors
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

ELECTION_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
"""What JetStream answers while a cluster's stream or meta leader is being elected (a node went
down): nothing came back, asking again shortly gets the answer."""

UNAVAILABLE: tuple[type[Exception], ...] = (
    *ELECTION_ERRORS,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
)
"""NATS not answering now (an election, or the connection between servers): an HTTP request
that met one is answered 503 with Retry-After; any other NATS error (a bad request, a missing
stream, a payload too large) is a fault, answered 500 and logged with its traceback."""
