"""memhp exporter: the read side."""

# The one place the version is set (pyproject.toml reads it from here).
__version__ = "0.1.0"
