"""Development helpers for files generated from sources in this repository."""
