"""A fault or warning about one of the LSM engine's files: which file, where in
it, and what is wrong, kept apart so that a tool can print or check each."""
import re
from dataclasses import dataclass

from rldb.errors import CorruptionError, StorageIOError

FAULT, WARNING = "fault", "warning"


def bare_message(exc):
    """An error's message without the ' in PATH at offset N' that
    CorruptionError appends (also where a wrapped error repeats it inside):
    a Finding carries the path and offset itself."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # a StorageIOError's strerror is its whole message
    text = str(exc)
    path = getattr(exc, "path", None)
    if path is not None:
        text = re.sub(re.escape(f" in {path}") + r"(?: at offset \d+)?", "", text)
        text = text.removeprefix(f"{path}: ")
    return text


@dataclass(frozen=True)
class Finding:
    severity: str         # FAULT or WARNING
    path: str
    offset: int | None    # None when the problem is the whole file
    message: str

    @classmethod
    def from_error(cls, exc, path=None, severity=FAULT, note=""):
        """The finding an exception raised while reading path describes."""
        if isinstance(exc, CorruptionError):
            return cls(severity, exc.path or path, exc.offset, bare_message(exc) + note)
        if isinstance(exc, OSError) and exc.filename and not isinstance(exc, StorageIOError):
            path = exc.filename
        return cls(severity, path, None, bare_message(exc) + note)

    @property
    def where(self):
        return self.path if self.offset is None else f"{self.path} offset {self.offset}"

    def __str__(self):
        return f"{self.where}: {self.message}"
