"""The exporter's HTTP endpoint: thin routes on the shared web layer (:mod:`memhp.web`).

``/metrics`` (``--web.telemetry-path``), a landing page at ``/``, ``/-/healthy``
and ``/-/ready`` (no credentials; ready once the first collection is done), 404 elsewhere.  Limits, deadlines, TLS and basic auth
(``--web.config.file``) are the web layer's, the same as the controller's.

The telemetry route calls a *renderer*: ``render(accept, params) ->
(content_type, body)``.  Today it is :func:`registry_renderer` (prometheus_client's
text/OpenMetrics negotiation and ``?name[]=`` filtering); anything that returns
pre-rendered bytes can take its place.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

from prometheus_client.registry import CollectorRegistry

from memhp.web import (
    Authenticator,
    Limits,
    ListenAddressError,
    Request,
    Response,
    Route,
    WebServer,
    gzip_accepted,
    split_host_port,
    tls_contexts,
    web_config,
)
from memhp.web.probes import probe_routes

from .exposition import render as render_exposition

Renderer = Callable[..., tuple[str, bytes]]  # (accept, params, gzip=False) -> (content type, body)

# Scrapes are served from the block snapshot and its cached exposition, so they
# are cheap; 16 at once covers Prometheus HA pairs, federation and people with
# curl (bench/steady_scrape.py runs 8 concurrent scrapers).
DEFAULT_LIMITS = Limits(header_timeout=5.0, read_timeout=10.0, max_connections=64, max_concurrency=16)


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:10301``, ``127.0.0.1:10301``, ``[::1]:10301`` -> (host, port); ValueError if not HOST:PORT."""
    try:
        host, port = split_host_port(addr)
    except ListenAddressError as e:
        raise ValueError(str(e)) from None
    return host or "0.0.0.0", port


def registry_renderer(registry: CollectorRegistry) -> Renderer:
    """The exposition of ``registry`` for an Accept header and query (``name[]``).

    The per-block families come pre-rendered (and pre-gzipped) from the block
    snapshot (exporter/exposition.py); prometheus_client encodes the rest and
    negotiates text vs OpenMetrics.
    """

    def render(accept: str, params: Mapping[str, list[str]], gzip: bool = False) -> tuple[str, bytes]:
        return render_exposition(registry, accept, params.get("name[]"), gzip=gzip)

    return render


def make_routes(render: Renderer, telemetry_path: str, ready: Callable[[], bool] = lambda: True) -> dict[str, Route]:
    landing = (
        f"<html><head><title>memhp exporter</title></head><body><h1>memhp exporter</h1>"
        f'<p><a href="{html.escape(telemetry_path)}">Metrics</a></p></body></html>'
    ).encode()

    def metrics(req: Request) -> Response:
        # The block families' gzip is cached with the snapshot: compress here, not in the web layer.
        zipped = gzip_accepted(req.header("Accept-Encoding") or "")
        content_type, body = render(req.header("Accept") or "", parse_qs(req.query), gzip=zipped)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if zipped else {}
        return Response(200, body, content_type, headers=headers)

    def home(req: Request) -> Response:
        return Response(200, landing, "text/html; charset=utf-8")

    routes = {**probe_routes(ready), "/": Route({"GET": home})}
    routes[telemetry_path] = Route({"GET": metrics})
    return routes


def serve(
    registry: CollectorRegistry | Renderer,
    listen: str,
    telemetry_path: str = "/metrics",
    certfile: str | None = None,
    keyfile: str | None = None,
    *,
    web_config_file: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    ready: Callable[[], bool] = lambda: True,
) -> WebServer:
    """Start serving in background threads; returns the server (``.server_address``, ``.shutdown()``).

    Raises memhp.web.SecretFileError (bad web config, TLS files) or OSError (address in use).
    """
    render = registry_renderer(registry) if isinstance(registry, CollectorRegistry) else registry
    config = web_config(web_config_file)
    users = config().users
    auth = Authenticator(users=(lambda: config().users or {}) if users is not None else None)
    server = WebServer(
        listen,
        make_routes(render, telemetry_path, ready),
        limits=limits,
        auth=auth,
        tls=tls_contexts(config, certfile, keyfile),
        extra_headers=lambda: config().headers,
        name="memhp-exporter",
    )
    return server.start()
