"""The engine benchmark as a plain script, without pytest, for quick iteration:

    .venv/bin/python bench/engines.py [--n N] [--engines memory,dict,rocksdict]
                                      [--phases load,get] [--rounds 3]
                                      [--engine-option KIND:NAME=VALUE ...]

It runs the same workload and phases as `make bench` and prints the same table."""
import argparse
import statistics
import sys
import tempfile

from adapters import (RATIO_PEERS, engine_factories, missing_peers, parse_engine_options, rldb_name,
                      select_engines)
from phases import EngineRun, select_phases, time_rounds
from report import Results, preamble, render
from rldb.storage import engine_kinds
from workload import Workload, bench_n

DEFAULT_ROUNDS = 3


def run(names, factories, phases, workload, rounds, root, results, log=None):
    """Every selected phase of every selected engine, one engine at a time, into results."""
    for name in names:
        engine = EngineRun(factories[name](), workload, root)
        try:
            for phase in phases:
                step = engine.step(phase)
                if step is None:
                    continue
                median = statistics.median(time_rounds(step, rounds))
                results.record(engine, phase, median, step.ops)
                if log:
                    log(f"{name:<12} {phase:<10} median {median:.4f} s/round ({step.ops:,} ops)")
        finally:
            engine.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None,
                        help="keys to load (default: $RLDB_BENCH_N, else 200,000)")
    parser.add_argument("--engines", default=None, help="comma-separated engines (default: all)")
    parser.add_argument("--phases", default=None, help="comma-separated phases (default: all)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds per phase")
    parser.add_argument("--engine-option", action="append", default=[], metavar="KIND:NAME=VALUE",
                        help="an option for an rldb engine, e.g. lsm:block_size=8192 (repeatable)")
    args = parser.parse_args(argv)

    factories = engine_factories(parse_engine_options(args.engine_option))
    names = select_engines(factories, args.engines)
    phases = select_phases(args.phases)
    workload = Workload(bench_n(args.n))
    results = Results()
    with tempfile.TemporaryDirectory(prefix="rldb-bench-") as root:
        head = preamble(workload, args.rounds, root, missing_peers())
        run(names, factories, phases, workload, args.rounds, root, results,
            log=lambda line: print(line, file=sys.stderr, flush=True))
    rldb = [rldb_name(kind) for kind in engine_kinds()]
    print(render(results, rldb, RATIO_PEERS, head))


if __name__ == "__main__":
    main()
