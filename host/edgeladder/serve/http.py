"""The tier's HTTP side: KServe-style health and Prometheus metrics (stdlib server).

``GET /v2/health/live``   200 while the process runs
``GET /v2/health/ready``  200 once warmed up and connected (the model ran at every batch
                          bucket; the broker is connected when serving over MQTT), else 503
``GET /metrics``          the tier's own registry in the Prometheus text format

Bound to 127.0.0.1 unless told otherwise: metrics are for a local scraper, not the world.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgeladder.serve import TierError
from edgeladder.serve.metrics import CONTENT_TYPE, Metrics


class HttpServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool], metrics: Metrics) -> None:
        routes = {
            "/v2/health/live": lambda: (200, b"live\n", "text/plain"),
            "/v2/health/ready": lambda: (
                (200, b"ready\n", "text/plain") if ready() else (503, b"not ready\n", "text/plain")
            ),
            "/metrics": lambda: (200, metrics.text(), CONTENT_TYPE),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, body, ctype = route() if route else (404, b"not found\n", "text/plain")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:
                pass  # a scraper every few seconds is not news

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise TierError(f"cannot listen for HTTP on {host}:{port}: {e.strerror or e}") from e
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tier-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
