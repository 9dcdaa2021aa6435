"""memhp exporter: the read side.  It never writes."""
