"""Child-process scripts for the LSM engine tests (tests/test_lsm_*.py)."""
