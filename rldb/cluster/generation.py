"""A node's generation: the restart counter peers compare member entries by.

It grows on every start and is at least the start time in ms, so that a
node whose store was wiped still starts above its last generation: peers
only take a member entry with a higher (generation, heartbeat), and would
otherwise see the node down until its heartbeat passed the one they
remember.  The time comes from outside (sans-IO): the server passes the
wall clock, the simulator its virtual one."""
import struct

KEY = b"generation"


def next_generation(store, now):
    """Reads the stored generation, stores and returns the next one."""
    raw = store.get_meta(KEY)
    stored = struct.unpack(">Q", raw)[0] if raw and len(raw) == 8 else 0
    generation = max(stored + 1, int(now * 1000))
    store.put_meta(KEY, struct.pack(">Q", generation))
    return generation
