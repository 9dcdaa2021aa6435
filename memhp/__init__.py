"""memhp: Prometheus exporter and remediation controller for Linux memory hot(un)plug.

The import package has three sides and a common core:

* ``memhp.exporter`` (folder ``exporter/``): the read side; never writes.
* ``memhp.controller`` (folder ``controller/``): the act side; imports only
  ``memhp.exporter.kernel`` (the read model) from the exporter.
* ``memhp.report`` (folder ``report/``): capacity reviews from Prometheus;
  imports only from ``memhp``.
* ``memhp`` itself: what belongs to no side (the version, the ``memhp``
  umbrella command, units, the web layer).
"""

# The one place the version is set (pyproject.toml reads it from here).
__version__ = "0.1.0"
