"""The Bitcask engine: append-only data files, an in-memory keydir, hint files
for fast startup, and merges in the background.  See engine.py and
docs/formats.md (section "Bitcask")."""
