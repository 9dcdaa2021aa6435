"""Background sources: restarted with backoff after failures; the uevent
monitor really listens on netlink here (it only reads)."""

from memhp import background
from memhp.background import RestartingThread
from memhp.exporter.events.uevent_monitor import UeventMonitor
from tests.helpers.wait import wait_until as wait_for


class Flaky(RestartingThread):
    """Fails its first two runs, then works until stopped."""

    def __init__(self):
        super().__init__()
        self.runs = 0

    def follow(self, first):
        self.runs += 1
        if self.runs <= 2:
            raise OSError("not yet")
        self.up = True
        self._stop.wait()


def test_restarts_after_failures_with_backoff(monkeypatch):
    monkeypatch.setattr(background, "BACKOFF_START", 0.05)
    t = Flaky().start()
    try:
        wait_for(lambda: t.up)
        assert (t.runs, t.restarts) == (3, 2)
    finally:
        t.stop()
    assert not t.up and not t._thread.is_alive()


def test_uevent_monitor_listens_on_netlink():
    m = UeventMonitor(poll_timeout=0.1).start()
    try:
        wait_for(lambda: m.up)
        assert m.restarts == 0 and m.counts() == {}
    finally:
        m.stop()
    assert not m.up
