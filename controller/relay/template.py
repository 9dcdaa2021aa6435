"""The target template: where an alert's controller listens, from the alert's labels.

The scrape target that produced an alert already names its node, so no
registry is needed.  A template is an http(s) URL whose **host** holds
placeholders; the scheme, port, path and query are literal text, so a label
can choose which host the relay talks to and nothing else:

* ``{label:host}``: the host of a ``host``, ``host:port``, ``[v6]`` or
  ``[v6]:port`` value (``instance`` carries the exporter's port, the
  controller listens on its own); the value must be exactly that, and the
  host a host name, a dotted-quad IPv4 address or a bracketed IPv6 address
  (hosts.py);
* ``{label}``: the label's value as a piece of a host name, letters, digits,
  ``.`` and ``-`` only, e.g. ``{node_name}.nodes.example.com``;
* ``{label|fallback}``: ``fallback`` (the same characters) when the label is
  absent or empty; without a fallback such an alert is unresolvable.

Default: ``http://{instance:host}:10302/webhook/alertmanager``.

After substitution the host must be one host, and the URL is split again
and compared with the template: scheme, port, path and query must be the
template's own, with no user info.  With an allow-list (hosts.AllowList,
``--target.allow``) the host must be on it too.  Anything else makes the
alert unresolvable (counted, logged), never a request to a place the
template did not mean.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from .hosts import AllowList, BadHost, check_host, host_of

DEFAULT_TEMPLATE = "http://{instance:host}:10302/webhook/alertmanager"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(host))?(?:\|([^{}]*))?\}")
_HOST_PIECE = re.compile(r"[A-Za-z0-9.-]*", re.ASCII)
_SCHEME = re.compile(r"(https?)://")
_MAX_URL = 2048

# unresolvable_alerts{reason}
U_MISSING_LABEL = "missing_label"
U_BAD_VALUE = "bad_label_value"
U_BAD_URL = "bad_url"
U_NOT_ALLOWED = "not_allowed"
UNRESOLVABLE_REASONS = (U_MISSING_LABEL, U_BAD_VALUE, U_BAD_URL, U_NOT_ALLOWED)


class TemplateError(ValueError):
    """The template itself is unusable (found at start-up)."""


class Unresolvable(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _comparable(parts: SplitResult) -> tuple[object, ...]:
    return (parts.scheme, parts.port, parts.path, parts.query, parts.fragment, parts.username, parts.password)


@dataclass(frozen=True)
class TargetTemplate:
    text: str
    allow: AllowList | None = None  # None: any host (no credentials sent, or --target.allow-any)
    _host: tuple[str | re.Match[str], ...] = field(init=False, repr=False, compare=False)
    _tail: str = field(init=False, repr=False, compare=False)
    _prefix: str = field(init=False, repr=False, compare=False)
    _netloc_tail: str = field(init=False, repr=False, compare=False)  # ":port" or ""
    _expected: tuple[object, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        scheme = _SCHEME.match(self.text)
        if scheme is None:
            raise TemplateError(f"target template {self.text!r} must start with http:// or https://")
        host, end = self._host_pieces(scheme.end())
        tail = self.text[end:]
        if not any(isinstance(p, re.Match) for p in host):
            raise TemplateError(
                f"target template {self.text!r} names no label in its host: every alert would go to one place"
            )
        if "{" in tail or "}" in tail:
            raise TemplateError(
                f"target template {self.text!r}: a label can only fill in the host, not the port, path or query"
            )
        if tail and tail[0] not in ":/?":
            raise TemplateError(f"target template {self.text!r}: {tail[0]!r} right after the host")
        try:
            expected = urlsplit(f"{scheme.group(1)}://h{tail}")
            expected.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise TemplateError(f"target template {self.text!r}: {e}") from None
        if expected.netloc.count("@") or expected.fragment:
            raise TemplateError(f"target template {self.text!r}: no user info or fragment")
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_tail", tail)
        object.__setattr__(self, "_prefix", self.text[: scheme.end()])
        object.__setattr__(self, "_netloc_tail", expected.netloc[1:])
        object.__setattr__(self, "_expected", _comparable(expected))

    def _host_pieces(self, start: int) -> tuple[tuple[str | re.Match[str], ...], int]:
        """The host's literal text and placeholders, and where the host ends."""
        pieces: list[str | re.Match[str]] = []
        i = start
        while i < len(self.text):
            m = _PLACEHOLDER.match(self.text, i)
            if m is not None:
                if m.group(3) is not None and not _HOST_PIECE.fullmatch(m.group(3)):
                    raise TemplateError(f"target template {self.text!r}: fallback {m.group(3)!r} is not host text")
                pieces.append(m)
                i = m.end()
                continue
            literal = _HOST_PIECE.match(self.text, i)
            if literal is None or literal.end() == i:
                break
            pieces.append(literal.group())
            i = literal.end()
        return tuple(pieces), i

    @property
    def labels(self) -> list[str]:
        return [p.group(1) for p in self._host if isinstance(p, re.Match)]

    def host(self, labels: Mapping[str, str]) -> str:
        """The target host of an alert with these labels (not yet checked against the allow-list)."""
        text = "".join(p if isinstance(p, str) else _substitute(p, labels) for p in self._host)
        try:
            return check_host(text)
        except BadHost as e:
            raise Unresolvable(U_BAD_URL, f"target host: {e}") from None

    def resolve(self, labels: Mapping[str, str]) -> str:
        """The target URL of an alert with these labels; Unresolvable if there is none."""
        host = self.host(labels)
        url = f"{self._prefix}{host}{self._tail}"
        if len(url) > _MAX_URL:
            raise Unresolvable(U_BAD_URL, f"target URL longer than {_MAX_URL} characters")
        try:
            parts = urlsplit(url)
            # Built from checked pieces; split again anyway, so that no value can move a boundary.
            same = _comparable(parts) == self._expected and parts.netloc == host + self._netloc_tail
        except ValueError as e:
            raise Unresolvable(U_BAD_URL, f"target URL {url[:200]!r}: {e}") from None
        if not same:
            raise Unresolvable(U_BAD_URL, f"target URL {url[:200]!r} is not the template's shape")
        if self.allow is not None and not self.allow.allows(host):
            raise Unresolvable(U_NOT_ALLOWED, f"target host {host!r} is not on --target.allow")
        return url


def _substitute(m: re.Match[str], labels: Mapping[str, str]) -> str:
    name, spec, fallback = m.group(1), m.group(2), m.group(3)
    value = labels.get(name, "")
    if not value:
        if fallback is None:
            raise Unresolvable(U_MISSING_LABEL, f"alert has no label {name!r}")
        return fallback
    if spec == "host":
        try:
            return host_of(value)
        except BadHost as e:
            raise Unresolvable(U_BAD_VALUE, f"label {name}: {e}") from None
    if not _HOST_PIECE.fullmatch(value):
        raise Unresolvable(U_BAD_VALUE, f"label {name}={value[:80]!r} is not host-name text")
    return value
