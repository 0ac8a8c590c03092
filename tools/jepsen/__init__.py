"""A Jepsen-style test of rldb: real rldb-server processes in network
namespaces, under partitions, pauses, kills and clock skew, with a set
workload and a deletes workload, checked and plotted.  Run it with
`make jepsen` or `python -m tools.jepsen`; see README.md here."""
