"""The error classes of rldb: one root, a class per kind of failure."""


class RldbError(Exception):
    """Root of every error rldb raises on purpose."""


class CorruptionError(RldbError):
    """A checksum or format check failed.  Carries the file and offset when known,
    so an operator can find the damaged bytes."""

    def __init__(self, message, path=None, offset=None):
        self.path = None if path is None else str(path)
        self.offset = offset
        where = ""
        if self.path is not None:
            where = f" in {self.path}"
            if offset is not None:
                where += f" at offset {offset}"
        super().__init__(message + where)


class InvalidArgumentError(RldbError, ValueError):
    """A caller passed something rldb does not accept (wrong type, empty key, unknown option)."""


class StorageIOError(RldbError, OSError):
    """The operating system refused a read, write or sync."""


class NotSupportedError(RldbError):
    """The operation exists in the interface but this engine or machine cannot do it."""


class ClosedError(RldbError):
    """The engine (or connection) was closed; open a new one."""


class RequestError(RldbError):
    """A node answered a request with an error.  kind is the protocol's tag
    (NotFound, QuorumNotReached, InvalidRequest, Internal); fields its details."""

    def __init__(self, kind, fields=None):
        self.kind = kind
        self.fields = fields or {}
        detail = self.fields.get("reason") or ", ".join(
            f"{k}={v!r}" for k, v in self.fields.items() if k != "errors")
        super().__init__(f"{kind}: {detail}" if detail else kind)


class QuorumNotReachedError(RequestError):
    """Fewer replicas than r (or w) answered before the deadline.

    For a write, `indeterminate` tells which of two things happened: True,
    the outcome is unknown (the reason starts with "Indeterminate"; the
    write may still become visible, so a retry may write it twice); False,
    it was applied nowhere and a retry is a new write."""

    @property
    def indeterminate(self):
        return str(self.fields.get("reason", "")).startswith("Indeterminate")


class ConnectionLostError(RldbError, ConnectionError):
    """The connection to a node failed or closed before the reply came."""
