"""Options of the Bitcask engine and their defaults.

Every option can be passed to open_engine("bitcask", path, **options)."""
from rldb._core.bitcask import BC_MAX_FILE_SIZE
from rldb.errors import InvalidArgumentError

DEFAULTS = {
    # The active data file is closed (rolled) once the next entry would take it
    # past this many bytes; 1 .. 4 GiB - 1 (entry offsets are 32-bit).  A single
    # entry larger than this gets a file of its own.
    "max_file_size": 256 << 20,
    # fdatasync the active file before every write returns (group commit:
    # threads writing at once share one fdatasync).  Otherwise each write goes
    # to the OS before it returns (a process crash loses nothing) and the file
    # is fsynced on flush(), close() and roll.
    "sync": False,
    # An immutable data file whose dead bytes (overwritten or deleted entries)
    # reach this fraction of its size is merged; 0 < x <= 1.
    "merge_threshold": 0.5,
    # A merge also runs once this many immutable files are each smaller than a
    # quarter of max_file_size, and takes them all in (each open starts a new
    # file); 0 turns that off.
    "merge_small_files": 8,
    # Merge in a background thread (False: inline, in the write that rolled the
    # active file; for tests).
    "background_merge": True,
    # Create the directory when it holds no database (False: refuse to open).
    "create_if_missing": True,
}


def validate(options):
    """Type and range checks, with the option's name in the message."""
    for name in ("sync", "background_merge", "create_if_missing"):
        if not isinstance(options[name], bool):
            raise InvalidArgumentError(f"option {name} must be True or False, not {options[name]!r}")
    size = options["max_file_size"]
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= BC_MAX_FILE_SIZE:
        raise InvalidArgumentError(
            f"option max_file_size must be an integer in 1..{BC_MAX_FILE_SIZE}, not {size!r}")
    threshold = options["merge_threshold"]
    if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
            or not 0 < threshold <= 1):
        raise InvalidArgumentError(
            f"option merge_threshold must be a number in (0, 1], not {threshold!r}")
    small = options["merge_small_files"]
    if not isinstance(small, int) or isinstance(small, bool) or small < 0 or small == 1:
        raise InvalidArgumentError(
            f"option merge_small_files must be 0 (off) or an integer >= 2, not {small!r}")
