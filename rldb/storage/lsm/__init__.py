"""The LSM-tree engine: WAL, C skiplist memtable, SSTables, leveled compaction.

    from rldb.storage import open_engine
    db = open_engine("lsm", "/path/to/dir", memtable_size=4 << 20)
"""
