"""Names of the files in a Bitcask directory, and the small helpers that read,
delete and write them (docs/formats.md, section "Bitcask").

    RRRRRRRRRR-IIIIIIIIII.data   a data file: rank R, id I (10 decimal digits each)
    RRRRRRRRRR-IIIIIIIIII.hint   its hint file
    *.tmp                        a file not yet committed (the active file's
                                 hint, a merge output): deleted on open unless
                                 a MERGE manifest names it
    MERGE                        a committed merge whose inputs may not all be
                                 deleted yet: finished on open
    LOCK                         flock(LOCK_EX) while an engine has the directory
                                 (rldb/storage/directory.py)

Ids are unique and never reused.  The rank orders files for recovery (a later
(rank, id, offset) wins): a file the writer creates has rank = id; a merge
output takes the highest rank of the merge's inputs, so that it sits where they
did, below every file written since."""
import json
import os
import re

from rldb._core.checksum import crc32c
from rldb.errors import CorruptionError
from rldb.storage.directory import replace_durably

MERGE = "MERGE"
TMP = ".tmp"
_NAME = re.compile(r"^(\d{10})-(\d{10})\.(data|hint)$")


def data_name(rank, file_id):
    return f"{rank:010d}-{file_id:010d}.data"


def hint_name(rank, file_id):
    return f"{rank:010d}-{file_id:010d}.hint"


def parse_name(name):
    """(rank, id, "data" | "hint") for a committed data or hint file, else None."""
    m = _NAME.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), m.group(3)


def read_file(path):
    with open(path, "rb", buffering=0) as f:
        return f.read()


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_manifest(dirname, inputs, outputs):
    """Records a merge as committed: one JSON line naming the input and output
    data files, then its CRC-32C in hex; written to MERGE.tmp, fsynced, renamed
    over MERGE, and the directory fsynced."""
    body = json.dumps({"inputs": sorted(inputs), "outputs": sorted(outputs)}).encode()
    replace_durably(os.path.join(dirname, MERGE), body + b"\n%08x\n" % crc32c(body),
                    tmp=os.path.join(dirname, MERGE + TMP))


def read_manifest(dirname):
    """(input names, output names) of a committed merge."""
    path = os.path.join(dirname, MERGE)
    data = read_file(path)
    lines = data.split(b"\n")
    try:
        body, crc = lines[0], int(lines[1], 16)
        if len(lines) != 3 or lines[2] or crc32c(body) != crc:
            raise ValueError("checksum mismatch")
        doc = json.loads(body)
        inputs, outputs = doc["inputs"], doc["outputs"]
        if not all(isinstance(n, str) and parse_name(n) and n.endswith(".data")
                   for n in inputs + outputs):
            raise ValueError("bad file name")
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise CorruptionError(f"merge manifest is damaged ({exc})", path, 0) from None
    return inputs, outputs
