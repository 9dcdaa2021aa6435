"""The kernel read model: typed, bounded readers of the memory hotplug sysfs
and procfs files, the per-scrape snapshot and the zone accounting.

It never writes.  The controller imports this subpackage (and only this one)
from the exporter.
"""
