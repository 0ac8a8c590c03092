"""Helpers shared by the LSM engine tests (tests/test_lsm_*.py)."""
