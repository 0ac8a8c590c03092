"""Child-process scripts for the Bitcask engine tests (tests/test_bitcask_*.py)."""
