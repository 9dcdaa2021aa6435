"""The target template: where an alert's controller listens, from the alert's labels.

The scrape target that produced an alert already names its node, so no
registry is needed.  A template is a URL with placeholders:

* ``{label}``: the label's value, e.g. ``{node_address}``;
* ``{label:host}``: the host part of a ``host:port`` value (``instance``
  carries the exporter's port, the controller listens on its own);
* ``{label|fallback}``: ``fallback`` (literal text) when the label is absent
  or empty; without a fallback such an alert is unresolvable.

Default: ``http://{instance:host}:10302/webhook/alertmanager``.

A label value is put in the URL only if it is made of URL-safe characters
(letters, digits and ``. - _ ~ : [ ] % /``) and holds
no ``..`` segment; the result must be an http(s) URL with a host and no
user info.  Anything else makes the alert unresolvable (counted, logged),
never a request to a place the template did not mean.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_TEMPLATE = "http://{instance:host}:10302/webhook/alertmanager"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(host))?(?:\|([^{}]*))?\}")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._~:\[\]%/-]*$")
_MAX_URL = 2048

# unresolvable_alerts{reason}
U_MISSING_LABEL = "missing_label"
U_BAD_VALUE = "bad_label_value"
U_BAD_URL = "bad_url"
UNRESOLVABLE_REASONS = (U_MISSING_LABEL, U_BAD_VALUE, U_BAD_URL)


class TemplateError(ValueError):
    """The template itself is unusable (found at start-up)."""


class Unresolvable(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _host_part(value: str) -> str:
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value  # bare host or bare IPv6 (left as is; the URL check decides)


@dataclass(frozen=True)
class TargetTemplate:
    text: str

    def __post_init__(self) -> None:
        rest = _PLACEHOLDER.sub("", self.text)
        if "{" in rest or "}" in rest:
            raise TemplateError(f"target template {self.text!r}: braces that are not a {{label}} placeholder")
        if not _PLACEHOLDER.search(self.text):
            raise TemplateError(f"target template {self.text!r} names no label: every alert would go to one place")
        scheme = self.text.partition("://")[0]
        if scheme not in ("http", "https"):
            raise TemplateError(f"target template {self.text!r} must start with http:// or https://")

    @property
    def labels(self) -> list[str]:
        return [m.group(1) for m in _PLACEHOLDER.finditer(self.text)]

    def resolve(self, labels: Mapping[str, str]) -> str:
        """The target URL of an alert with these labels; Unresolvable if there is none."""

        def substitute(m: re.Match[str]) -> str:
            name, spec, fallback = m.group(1), m.group(2), m.group(3)
            value = labels.get(name, "")
            if not value:
                if fallback is None:
                    raise Unresolvable(U_MISSING_LABEL, f"alert has no label {name!r}")
                return fallback
            if spec == "host":
                value = _host_part(value)
            if not _SAFE_VALUE.match(value) or ".." in value.split("/"):
                raise Unresolvable(U_BAD_VALUE, f"label {name}={value[:80]!r} is not safe in a URL")
            return value

        url = _PLACEHOLDER.sub(substitute, self.text)
        if len(url) > _MAX_URL:
            raise Unresolvable(U_BAD_URL, f"target URL longer than {_MAX_URL} characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise Unresolvable(U_BAD_URL, f"target URL {url[:200]!r}: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise Unresolvable(U_BAD_URL, f"target URL {url[:200]!r} is not an http(s) URL with a host")
        return url
