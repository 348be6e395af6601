"""A fake Zeus daemon (zeusd): Zeus's HTTP API on a Unix socket, served by the test process itself.

It answers the endpoints Zeus's `ZeusdClient` calls for GPU power limits (`/discover`,
`/gpu/get_power_limit`, `/gpu/get_power_limit_constraints`, `/gpu/set_power_limit`,
`/gpu/get_persistence_mode`, `/gpu/set_persistence_mode`) in the shapes zeus 0.16.0's client
parses, and acts on a `PowerGPU` as a root daemon would (`set_limit_as_root`: whatever the
card's `permitted` says). Nothing leaves the machine: the socket is a file under /tmp.
"""

from __future__ import annotations

import json
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from fake_gpu_power import PowerGPU


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    gpu: PowerGPU
    control: bool
    requests: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass  # a Unix socket has no client address to log

    def _reply(self, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        gpu, path = self.server.gpu, url.path
        self.server.requests.append(f"{self.command} {path}")
        if path == "/discover":
            groups = ["gpu-read", "gpu-control"] if self.server.control else ["gpu-read"]
            self._reply(
                {
                    "gpus": [{"id": 0, "name": gpu.name}],
                    "cpus": [],
                    "enabled_api_groups": groups,
                    "auth_required": False,
                }
            )
        elif path == "/gpu/get_power_limit":
            self._reply({"0": {"power_limit_mw": gpu.limit_mW}})
        elif path == "/gpu/get_power_limit_constraints":
            self._reply({"0": {"min_power_limit_mw": gpu.min_mW, "max_power_limit_mw": gpu.max_mW}})
        elif path == "/gpu/get_persistence_mode":
            self._reply({"0": {"enabled": gpu.persistence}})
        elif path == "/gpu/set_power_limit" and self.server.control:
            gpu.set_limit_as_root(int(q["power_limit_mw"]))
            self._reply({})
        elif path == "/gpu/set_persistence_mode" and self.server.control:
            gpu.set_persistence_as_root(q["enabled"] == "true")
            self._reply({})
        else:
            self._reply({"error": f"{path} not served"}, status=404)

    do_GET = _route
    do_POST = _route


@contextmanager
def running_zeusd(gpu: PowerGPU, control: bool = True) -> Iterator[_Server]:
    """Serve `gpu` on a fresh socket inside the block; `.server_address` is the socket's path."""
    folder = Path(tempfile.mkdtemp(prefix="zeusd-", dir="/tmp"))  # short: socket paths max ~107 chars
    server = _Server(str(folder / "zeusd.sock"), _Handler)
    server.gpu, server.control, server.requests = gpu, control, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        (folder / "zeusd.sock").unlink(missing_ok=True)
        folder.rmdir()
