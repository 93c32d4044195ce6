"""Container healthcheck: exit 0 when GET http://127.0.0.1:<port>/healthz answers 2xx."""

import sys
import urllib.request

port = sys.argv[1] if len(sys.argv) > 1 else "8080"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
        sys.exit(0 if 200 <= r.status < 300 else 1)
except OSError:
    sys.exit(1)
