"""The one hardened HTTP layer of ``memhp-exporter`` and ``memhp-controller``.

* :mod:`.address`: the listen-address parser;
* :mod:`.server`: connections, deadlines, limits, routing, answers (:class:`WebServer`);
* :mod:`.auth`, :mod:`.secrets`: credentials from files, bcrypt users;
* :mod:`.config`, :mod:`.tls`: ``--web.config.file`` (exporter-toolkit's format), TLS contexts;
* :mod:`.logs`: escaping and rate-limiting what clients put in log lines;
* :mod:`.flags`: the shared ``--web.*`` flags.

Routes stay in the programs; :func:`web_config` and :func:`tls_contexts` wire
a web config file and the older ``--web.tls.*`` flags into what the server takes.
"""

from __future__ import annotations

from collections.abc import Callable

from .address import ListenAddressError, bind_address, is_loopback_host, split_host_port
from .auth import AUTH_BUSY, AUTH_FAILED, AUTH_MISSING, Authenticator
from .config import MAX_WEB_CONFIG_BYTES, TLSServerConfig, WebConfig, WebConfigError, parse_web_config
from .secrets import SecretFile, SecretFileError
from .server import HEALTH_PATH, Limits, Request, Response, Route, WebServer, gzip_accepted
from .tls import TLSContexts


def web_config(path: str | None) -> Callable[[], WebConfig]:
    """The current web config (re-read when the file changes); raises SecretFileError at start-up."""
    if not path:
        empty = WebConfig()
        return lambda: empty
    return SecretFile(path, parse_web_config, limit=MAX_WEB_CONFIG_BYTES, private=False).get


def tls_contexts(
    config: Callable[[], WebConfig], cert_file: str | None = None, key_file: str | None = None
) -> TLSContexts:
    """TLS from the web config file, or from the (older) ``--web.tls.cert-file``/``--web.tls.key-file``."""
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise WebConfigError("TLS needs both --web.tls.cert-file and --web.tls.key-file")
        if config().tls is not None:
            raise WebConfigError("TLS is configured in --web.config.file and with --web.tls.*: give one")
        flags_cfg = TLSServerConfig(cert_file, key_file)
        return TLSContexts(lambda: flags_cfg)
    return TLSContexts(lambda: config().tls)


__all__ = [
    "AUTH_BUSY",
    "AUTH_FAILED",
    "AUTH_MISSING",
    "HEALTH_PATH",
    "Authenticator",
    "Limits",
    "ListenAddressError",
    "Request",
    "Response",
    "Route",
    "SecretFile",
    "SecretFileError",
    "TLSContexts",
    "TLSServerConfig",
    "WebConfig",
    "WebConfigError",
    "WebServer",
    "bind_address",
    "gzip_accepted",
    "is_loopback_host",
    "split_host_port",
    "tls_contexts",
    "web_config",
]
