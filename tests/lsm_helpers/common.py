"""Helpers shared by the LSM engine tests (tests/test_lsm_*.py)."""
import time


def wait_until_idle(db, timeout=60.0):
    """Waits until the engine's background thread has nothing left to do: no
    immutable memtable, no compaction pending, and the figures steady for a
    moment.  Uses stats() only."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        s = db.stats()
        now = (s["levels"], s["flushes"], s["compactions"], s["trivial_moves"])
        if now == last and not s["immutable_memtable"] and s["pending_compaction_bytes"] == 0:
            return
        last = now
        time.sleep(0.005)
    raise AssertionError("the background thread never went idle")
