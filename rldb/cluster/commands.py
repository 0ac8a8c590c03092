"""Client requests and replies as the node core sees them, apart from any
encoding (rldb.net.protocol renders them as JSON or msgpack)."""
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Get:
    key: bytes
    r: Optional[int] = None
    pr: Optional[int] = None   # how many of the r must be primaries (not fallbacks)


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    context: Optional[bytes] = None
    w: Optional[int] = None
    pw: Optional[int] = None   # how many of the w must be primaries (not fallbacks)
    overwrite: bool = False    # no context: replace what the coordinating replica saw


@dataclass(frozen=True)
class Delete:
    key: bytes
    context: Optional[bytes] = None
    w: Optional[int] = None
    pw: Optional[int] = None


@dataclass(frozen=True)
class Stats:
    pass


@dataclass(frozen=True)
class ClusterState:
    pass


@dataclass(frozen=True)
class JoinCluster:
    addr: str


@dataclass(frozen=True)
class Admin:
    """Operator commands: status, ring, transfers, repair (with an optional
    partition, and rebuild to rebuild the trees from a scan first), leave."""
    op: str
    partition: Optional[int] = None
    rebuild: bool = False


ADMIN_OPS = ("status", "ring", "transfers", "repair", "leave")


@dataclass(frozen=True)
class Ok:
    """Success; value depends on the command (GetResult for Get, a dict for
    Stats, a list of node dicts for ClusterState, None otherwise)."""
    value: object = None


@dataclass(frozen=True)
class GetResult:
    values: list          # the live siblings (bytes), oldest write first
    context: bytes        # opaque: pass it back with the next put
    timestamps: list = field(default_factory=list)  # ms, one per value


@dataclass(frozen=True)
class Err:
    """Failure, named by the original project's error tags: NotFound,
    QuorumNotReached, InvalidRequest, Internal."""
    kind: str
    fields: dict = field(default_factory=dict)


def not_found(key):
    return Err("NotFound", {"key": key})


def invalid(reason):
    return Err("InvalidRequest", {"reason": reason})


def internal(reason):
    return Err("Internal", {"reason": reason})
