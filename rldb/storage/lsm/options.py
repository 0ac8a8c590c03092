"""Options of the LSM engine and their defaults.

Every option can be passed to open_engine("lsm", path, **options)."""

DEFAULTS = {
    # Bytes of memtable before it is frozen and flushed to an L0 table.
    "memtable_size": 4 << 20,
    # Target size of a data block before it is closed (uncompressed bytes).
    "block_size": 4096,
    # Keys between restart points inside a block (full keys, for binary search).
    "restart_interval": 16,
    # Data block compression: "snappy" (kept only where it saves 1/8) or "none".
    "compression": "snappy",
    # Bloom filter bits per key (about 1% false positives at 10), 0..64; 0: no filter.
    "bloom_bits_per_key": 10,
    # Bytes of verified data blocks kept in the LRU block cache.
    "block_cache_size": 32 << 20,
    # Table files kept open at once (older ones are closed and reopened on demand).
    "max_open_files": 500,
    # fsync the write-ahead log before every write returns (group commit across threads).
    "sync": False,
    # Target size of a table written by compaction.
    "target_file_size": 2 << 20,
    # L0 files that trigger a compaction into L1.
    "l0_compaction_trigger": 4,
    # L0 files at which every write is delayed by 1 ms, and at which writes stop.
    "l0_slowdown_trigger": 8,
    "l0_stop_trigger": 12,
    # Bytes allowed in L1; each deeper level holds level_size_ratio times more.
    "level1_max_bytes": 10 << 20,
    "level_size_ratio": 10,
    # Run flushes and compactions in a background thread (False: inline, for tests).
    "background": True,
    # Create a database when the directory holds none (False: refuse to open).
    "create_if_missing": True,
    # A damaged write-ahead log with intact records after the damage:
    # "strict" refuses to open (CorruptionError naming file and offset);
    # "prefix" recovers the writes before the damage and drops the rest.
    "wal_recovery": "strict",
}

NUM_LEVELS = 7
CHOICES = {"compression": ("snappy", "none"), "wal_recovery": ("strict", "prefix")}


def validate(options):
    """Type and range checks, with the option's name in the message."""
    from rldb.errors import InvalidArgumentError

    for name, value in options.items():
        default = DEFAULTS[name]
        if isinstance(default, str):
            if value not in CHOICES[name]:
                raise InvalidArgumentError(
                    f"option {name} must be one of {', '.join(map(repr, CHOICES[name]))}, not {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"option {name} must be True or False, not {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgumentError(f"option {name} must be a non-negative integer, not {value!r}")
    checks = [
        ("memtable_size", 1024), ("block_size", 64), ("restart_interval", 1),
        ("max_open_files", 8), ("target_file_size", 1024), ("l0_compaction_trigger", 1),
        ("level1_max_bytes", 1024), ("level_size_ratio", 2),
    ]
    for name, low in checks:
        if options[name] < low:
            raise InvalidArgumentError(f"option {name} must be at least {low}, not {options[name]}")
    if options["bloom_bits_per_key"] > 64:
        raise InvalidArgumentError("option bloom_bits_per_key must be at most 64")
    if not (options["l0_compaction_trigger"] <= options["l0_slowdown_trigger"]
            <= options["l0_stop_trigger"]):
        raise InvalidArgumentError(
            "options must satisfy l0_compaction_trigger <= l0_slowdown_trigger <= l0_stop_trigger")
