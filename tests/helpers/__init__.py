"""Harnesses shared by the tests and the benchmarks: free ports, rldb-server
processes, and the crash writer of the disk engines.

They live under tests/ because the tests are their main users; bench/
scripts put the repository root on sys.path and import them from here, so
that a benchmark starts and stops its nodes exactly as the tests do.
Nothing here imports pytest."""
