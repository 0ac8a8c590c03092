"""pytest wiring for the engine benchmark: options, the per-engine store, and the table at the end.

    make bench                                   # everything at N=200,000
    make bench BENCH_ARGS="--bench-n 20000 --bench-engines memory,dict,sorteddict"
    RLDB_BENCH_N=50000 .venv/bin/python -m pytest bench --bench-phases load,get

Only collected when bench/ is named on the command line (pyproject's testpaths is tests/)."""
import tempfile

import pytest

from adapters import (RATIO_PEERS, engine_factories, missing_peers, parse_engine_options, rldb_name,
                      select_engines)
from phases import EngineRun, select_phases
from report import Results, preamble, render
from rldb.storage import engine_kinds
from workload import Workload, bench_n

RESULTS = pytest.StashKey[Results]()
PREAMBLE = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("rldb-bench", "rldb storage-engine benchmark")
    group.addoption("--bench-n", type=int, default=None,
                    help="keys to load (default: $RLDB_BENCH_N, else 200,000)")
    group.addoption("--bench-rounds", type=int, default=3, help="rounds per phase (default 3)")
    group.addoption("--bench-engines", default=None, help="comma-separated engines (default: all)")
    group.addoption("--bench-phases", default=None, help="comma-separated phases (default: all)")
    group.addoption("--bench-engine-option", action="append", default=[], metavar="KIND:NAME=VALUE",
                    help="an option for an rldb engine, e.g. lsm:block_size=8192 (repeatable)")


def _factories(config):
    return engine_factories(parse_engine_options(config.getoption("--bench-engine-option")))


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames:
        config = metafunc.config
        names = select_engines(_factories(config), config.getoption("--bench-engines"))
        # module scope: pytest runs every phase of one engine before the next engine
        metafunc.parametrize("engine", names, indirect=True, scope="module")
        metafunc.parametrize("phase", select_phases(config.getoption("--bench-phases")))


def pytest_collection_modifyitems(config, items):
    # a phase's time grows with N: the project's per-test timeout is for unit tests
    if config.pluginmanager.hasplugin("timeout"):
        for item in items:
            item.add_marker(pytest.mark.timeout(0))


@pytest.fixture(scope="session")
def workload(request):
    return Workload(bench_n(request.config.getoption("--bench-n")))


@pytest.fixture(scope="session")
def bench_rounds(request):
    return request.config.getoption("--bench-rounds")


@pytest.fixture(scope="session")
def bench_results(request, workload, bench_root, bench_rounds):
    config = request.config
    if RESULTS not in config.stash:
        config.stash[RESULTS] = Results()
        config.stash[PREAMBLE] = preamble(workload, bench_rounds, bench_root, missing_peers())
    return config.stash[RESULTS]


@pytest.fixture(scope="session")
def bench_root():
    with tempfile.TemporaryDirectory(prefix="rldb-bench-") as root:
        yield root


@pytest.fixture(scope="module")
def engine(request, workload, bench_root):
    run = EngineRun(_factories(request.config)[request.param](), workload, bench_root)
    yield run
    run.close()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """At the end of the session, after pytest-benchmark's own tables: ours."""
    results = config.stash.get(RESULTS, None)
    if results is None or not results.rows:
        return
    rldb = [rldb_name(kind) for kind in engine_kinds()]
    terminalreporter.write_sep("=", "rldb engine benchmark")
    terminalreporter.write_line(render(results, rldb, RATIO_PEERS, config.stash[PREAMBLE]))
