"""The metrics listener (`[metrics] listen`): `/metrics` for Prometheus, `/` the status page.

A small threaded HTTP server on its own daemon threads. Read-only: GET and HEAD only,
nothing it serves changes state. The page shows file names, so the default address is
loopback; the README shows how to put it behind a reverse proxy with authentication.
A port that cannot be bound is said once in the log; uploads go on without it.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

log = structlog.get_logger("reka_sync.monitor")


class Monitor:
    """Serves `/metrics` and `/` on `address` until `close()`."""

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Callable[[], bytes],
        page: Callable[[], str],
    ) -> None:
        served = {"metrics": staticmethod(metrics), "page": staticmethod(page)}
        handler = type("Handler", (_Handler,), served)
        server_class = _V6Server if ":" in address[0] else _Server
        self._server = server_class(address, handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="reka-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving on a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()


def serve(
    address: tuple[str, int],
    metrics: Callable[[], bytes],
    page: Callable[[], str],
    quiet: bool = False,
) -> Monitor | None:
    """Given an address and what to serve, start a Monitor and return it; None if the
    address cannot be bound (said in the log: at debug level when `quiet`, a retry)."""
    try:
        monitor = Monitor(address, metrics, page)
    except OSError as exc:
        say = log.debug if quiet else log.error
        say(
            "cannot serve metrics and the status page; uploads go on without them, and"
            " reka-sync tries again every 5 s. Free the port or change metrics.listen",
            listen=f"{address[0]}:{address[1]}",
            error=exc.strerror or str(exc),
        )
        return None
    monitor.start()
    log.info("serving metrics and the status page", url=_url(address[0], monitor.port))
    return monitor


def _host_allowed(header: str, listen: str) -> bool:
    """Given a request's Host header and the address listened on, return whether to answer.
    On loopback, only an address or "localhost" is: a page whose name resolves to
    127.0.0.1 (DNS rebinding) must not read file names off this one."""
    try:
        if not ipaddress.ip_address(listen).is_loopback:
            return True
    except ValueError:
        return True
    name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn waits on DNS
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    metrics: Callable[[], bytes]
    page: Callable[[], str]
    server_version = "reka-sync"
    timeout = 30  # seconds an idle or slow client may hold its thread

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if not _host_allowed(self.headers.get("Host", ""), getattr(self.server, "server_name", "")):
            self.send_error(403, "on a loopback address only local names are served")
            return
        try:
            if path == "/metrics":
                body, kind = self.metrics(), CONTENT_TYPE_LATEST
            elif path in ("/", "/index.html"):
                body, kind = self.page().encode(), "text/html; charset=utf-8"
            else:
                self.send_error(404, "only / and /metrics are served here")
                return
        except Exception as exc:  # a failing read must answer 500, not hang the scrape
            log.exception("a metrics or status page request failed", path=path, error=str(exc))
            self.send_error(500, "reka-sync could not read its state; see its log")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every 15 s is not news for the log
