"""CRC-32C and LevelDB's masked form of it (csrc/checksum.c): the checksum of
every stored structure, and of the wire protocol's frames."""
from rldb._core.loader import as_buffer, check, ffi, lib

__all__ = ["HW_CRC32C", "crc32c", "crc32c_software", "crc32c_hardware", "mask_crc", "unmask_crc"]

HW_CRC32C = bool(lib.rldb_crc32c_hw_available())


def crc32c(data, crc=0):
    """CRC-32C of data, continuing from crc (0 to start)."""
    return lib.rldb_crc32c_extend(crc, as_buffer(data), len(data))


def crc32c_software(data, crc=0):
    """The table implementation, whatever the CPU offers (tests compare the two)."""
    return lib.rldb_crc32c_extend_sw(crc, as_buffer(data), len(data))


def crc32c_hardware(data, crc=0):
    """The CPU-instruction implementation; NotSupportedError where the CPU lacks it."""
    out = ffi.new("uint32_t *")
    check(lib.rldb_crc32c_extend_hw(crc, as_buffer(data), len(data), out), "crc32c")
    return out[0]


def mask_crc(crc):
    """LevelDB's masking, so that a CRC stored inside checksummed data stays strong."""
    return lib.rldb_crc32c_mask(crc)


def unmask_crc(masked):
    return lib.rldb_crc32c_unmask(masked)
