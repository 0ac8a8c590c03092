"""Command-line tools (click).  Each module defines one console script; see the
[project.scripts] table of pyproject.toml.

    rldb-sstable   inspect, dump and verify SSTables and LSM data directories,
                   and run a full manual compaction (rldb.cli.sstable)"""
