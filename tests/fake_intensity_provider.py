"""A fake Electricity Maps API on 127.0.0.1, served from a thread by the test that needs it.

It answers the two v3 endpoints wattwise asks (`/v3/carbon-intensity/latest`, `/forecast`) with
what the test scripted, or fails the way a test asks: an HTTP error status, or a delay longer than
the client's timeout. It records each request (path, zone, auth-token) so tests check what was sent.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    latest: float = 123.0
    forecast: list[tuple[datetime, float]] = field(default_factory=list)
    status: int = 200  # anything else: an error answer
    delay_s: float = 0.0  # sleep before answering (a timeout test sets it above the client's timeout)
    requests: list[dict[str, Any]] = field(default_factory=list)


def hourly(start: datetime, values: list[float]) -> list[tuple[datetime, float]]:
    return [(start + timedelta(hours=i), v) for i, v in enumerate(values)]


@contextmanager
def fake_provider(script: Script) -> Iterator[str]:
    """Serve `script` on a free loopback port; yields the endpoint URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout test): nothing to answer

        def _answer(self) -> None:
            url = urllib.parse.urlparse(self.path)
            zone = urllib.parse.parse_qs(url.query).get("zone", [None])[0]
            script.requests.append({"path": url.path, "zone": zone, "token": self.headers.get("auth-token")})
            if script.delay_s:
                time.sleep(script.delay_s)
            if script.status != 200:
                self.send_error(script.status)
                return
            if url.path.endswith("/latest"):
                body = {
                    "zone": zone,
                    "carbonIntensity": script.latest,
                    "datetime": "2026-12-01T10:00:00.000Z",
                }
            elif url.path.endswith("/forecast"):
                body = {
                    "zone": zone,
                    "forecast": [
                        {"carbonIntensity": v, "datetime": t.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
                        for t, v in script.forecast
                    ],
                }
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False  # a handler still sleeping out a timeout test must not hold the test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
