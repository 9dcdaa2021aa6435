"""Event sources that run in the background: the kernel log watcher (offline
failures), the uevent monitor, and the restart-with-backoff thread they share."""
