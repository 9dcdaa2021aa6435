"""The exporter's HTTP endpoint: the telemetry path, a landing page, 404 elsewhere."""

from __future__ import annotations

import html
import socket
import ssl
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

from .exposition import make_metrics_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:10301``, ``127.0.0.1:10301``, ``[::1]:10301`` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {addr!r} is not HOST:PORT")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def make_app(registry: CollectorRegistry, telemetry_path: str):
    metrics_app = make_metrics_app(registry)
    landing = (
        f"<html><head><title>memhp exporter</title></head><body><h1>memhp exporter</h1>"
        f'<p><a href="{html.escape(telemetry_path)}">Metrics</a></p></body></html>'
    ).encode()

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == telemetry_path:
            return metrics_app(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve(
    registry: CollectorRegistry,
    listen: str,
    telemetry_path: str = "/metrics",
    certfile: str | None = None,
    keyfile: str | None = None,
):
    """Start serving in a daemon thread; returns the server (``.server_address``, ``.shutdown()``)."""
    host, port = parse_listen_address(listen)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # socketserver's default backlog of 5 drops the SYNs of an 8th concurrent
        # scraper, which then waits for TCP's 1 s retransmit.
        request_queue_size = 128

    httpd = make_server(host, port, make_app(registry, telemetry_path), Server, handler_class=_QuietHandler)
    if certfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, name="memhp-http", daemon=True).start()
    return httpd
