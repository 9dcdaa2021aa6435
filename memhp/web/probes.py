"""``/-/healthy`` and ``/-/ready``, as Prometheus serves them: no credentials, no scrape.

Healthy: the process answers HTTP.  Ready: it has finished starting up and
serves what it is for (each program says what that means: docs/exporter.md,
docs/controller.md, docs/relay.md); 503 until then, for a readiness probe
or a load balancer.
"""

from __future__ import annotations

from collections.abc import Callable

from .server import HEALTH_PATH, Request, Response, Route

READY_PATH = "/-/ready"


def probe_routes(ready: Callable[[], bool] = lambda: True) -> dict[str, Route]:
    def health(req: Request) -> Response:
        return Response(200, b"OK\n")

    def readiness(req: Request) -> Response:
        if ready():
            return Response(200, b"Ready\n")
        return Response(503, b"Not ready: still starting\n", headers={"Retry-After": "1"})

    return {HEALTH_PATH: Route({"GET": health}, public=True), READY_PATH: Route({"GET": readiness}, public=True)}
