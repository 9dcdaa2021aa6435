"""Server TLS contexts from a :class:`TLSServerConfig`, rebuilt when a file changes.

Like exporter-toolkit, which reads the certificate at every handshake, a
renewed certificate (cert-manager, a cron'd ACME client) is picked up without a
restart: the files are stat'ed per connection and the context rebuilt when one
changed.  A new set that does not load keeps the last good context in force
(logged once).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable

from .config import CLIENT_AUTH_TYPES, TLS_VERSIONS, TLSServerConfig, WebConfigError

log = logging.getLogger(__name__)


def make_context(cfg: TLSServerConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[cfg.min_version]
    if cfg.max_version:
        ctx.maximum_version = TLS_VERSIONS[cfg.max_version]
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.client_ca_file:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
    except (OSError, ssl.SSLError) as e:
        raise WebConfigError(f"cannot load TLS certificate/key/CA ({', '.join(cfg.files())}): {e}") from None
    ctx.verify_mode = CLIENT_AUTH_TYPES[cfg.client_auth_type]
    return ctx


def _files_key(cfg: TLSServerConfig) -> tuple:
    out: list[tuple[int, ...] | None] = []
    for f in cfg.files():
        try:
            st = os.stat(f)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


class TLSContexts:
    """The context for the next connection; None when TLS is off."""

    def __init__(self, config: Callable[[], TLSServerConfig | None]) -> None:
        self._config = config
        self._lock = threading.Lock()
        cfg = config()
        self._cfg = cfg
        self._key = _files_key(cfg) if cfg else ()
        self._ctx = make_context(cfg) if cfg else None  # raises at start-up
        self._problem = ""

    @property
    def enabled(self) -> bool:
        return self._ctx is not None

    def get(self) -> ssl.SSLContext | None:
        cfg = self._config()
        if cfg is None or self._ctx is None:
            return self._ctx  # TLS on or off is decided at start
        key = _files_key(cfg)
        if cfg == self._cfg and key == self._key:
            return self._ctx
        with self._lock:
            if cfg != self._cfg or key != self._key:
                try:
                    self._ctx = make_context(cfg)
                    log.info("TLS certificate, key or CA changed; reloaded")
                    self._problem = ""
                except WebConfigError as e:
                    if str(e) != self._problem:
                        log.error("%s; keeping the TLS context last loaded", e)
                        self._problem = str(e)
                self._cfg, self._key = cfg, key
            return self._ctx
