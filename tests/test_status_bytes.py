"""What `rldb-client status` shows of each node's engine: the bytes of stored
data (tables, data files, or the data itself) apart from the LSM memtable's
arena, which is not data (an empty LSM node showed 65 kB of "bytes")."""
import random

import pytest

from rldb.cluster import commands as c
from rldb.cluster.node import CoreConfig, NodeCore
from rldb.cluster.store import ObjectStore
from rldb.cluster.topology import engine_bytes
from rldb.storage import open_engine


@pytest.mark.parametrize("kind", ["memory", "lsm", "bitcask"])
def test_status_shows_data_bytes_and_the_memtable_apart(kind, tmp_path):
    with open_engine(kind, None if kind == "memory" else str(tmp_path / kind)) as engine:
        core = NodeCore(CoreConfig("n1", "n1", partitions=8), ObjectStore(engine, 8),
                        random.Random(1))
        rng = random.Random(2)  # values that do not compress
        empty = core.status_view(0.0)["nodes"][0]
        assert 0 <= empty["data_bytes"] < 200  # the node's own records (actor, generation)
        for i in range(50):
            core.handle_client(i, c.Put(b"k%d" % i, rng.randbytes(100), None), 0.0)
        assert len(core.replies()) == 50
        if kind == "lsm":
            assert empty["memtable_bytes"] > 0  # the arena, even with no data
            engine.compact()                     # the data moves into a table
        else:
            assert empty["memtable_bytes"] is None
        full = core.status_view(10.0)["nodes"][0]  # past the refresh interval
        assert full["data_bytes"] >= 50 * 100, full


def test_engine_bytes_reads_each_engines_figure():
    assert engine_bytes({"bytes": 10, "memtable_bytes": 7}) == (10, 7)
    assert engine_bytes({"data_bytes": 12, "live_bytes": 3}) == (12, None)
    assert engine_bytes({}) == (0, None)
