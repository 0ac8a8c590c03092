"""rldb: a Dynamo-style key-value store and a toolkit of storage engines."""
from rldb._version import __version__

__all__ = ["__version__"]
