"""cffi build script for the C core: rldb._rldb_core.

setup.py names this file in cffi_modules.  The cdef is csrc/rldb.h itself with
its preprocessor lines removed, so the header and the binding cannot drift."""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _package_version():
    with open(os.path.join(ROOT, "rldb", "_version.py"), encoding="utf-8") as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


def _cdef():
    with open(os.path.join(HERE, "rldb.h"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    keep = [ln for ln in lines if not ln.startswith("#") or re.match(r"#define RLDB_\w+ \d+$", ln)]
    return "\n".join(keep)


def _files(suffix):
    return sorted(os.path.join("csrc", name) for name in os.listdir(HERE) if name.endswith(suffix))


SOURCES = _files(".c")
HEADERS = _files(".h")  # a change to one rebuilds the module too

ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source(
    "rldb._rldb_core",
    '#include "rldb.h"',
    sources=SOURCES,
    depends=HEADERS,
    include_dirs=["csrc"],
    define_macros=[("RLDB_VERSION", '"%s"' % _package_version())],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
