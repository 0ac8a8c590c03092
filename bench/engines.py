"""The engine benchmark as a plain script, without pytest, for quick iteration:

    .venv/bin/python bench/engines.py [--n N] [--engines memory,dict,rocksdict]
                                      [--phases load,get] [--rounds 3]
                                      [--engine-option KIND:NAME=VALUE ...]

It runs the same workload and phases as `make bench` and prints the same table."""
import argparse
import statistics
import sys
import tempfile
import traceback

from adapters import (RATIO_PEERS, engine_factories, missing_peers, parse_engine_options, rldb_name,
                      select_engines)
from phases import EngineRun, select_phases, time_rounds
from report import Results, preamble, render
from rldb.storage import engine_kinds
from workload import Workload, bench_n

DEFAULT_ROUNDS = 3


def run(names, factories, phases, workload, rounds, root, results, log):
    """Every selected phase of every selected engine, one engine at a time, into
    results.  An engine that fails is reported and left; the others still run.
    Returns the names of the engines that failed."""
    failed = []
    for name in names:
        engine = EngineRun(factories[name](), workload, root)
        phase = None
        try:
            for phase in phases:
                step = engine.step(phase)
                if step is None:
                    continue
                median = statistics.median(time_rounds(step, rounds))
                results.record(engine, phase, median, step.ops)
                log(f"{name:<12} {phase:<10} median {median:.4f} s/round ({step.ops:,} ops)")
        except Exception:
            log(f"{name:<12} {phase:<10} FAILED, its remaining phases are skipped:\n"
                + traceback.format_exc())
            failed.append(name)
        finally:
            try:
                engine.close()
            except Exception:
                log(f"{name:<12} close failed:\n" + traceback.format_exc())
    return failed


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

    try:
        factories = engine_factories(parse_engine_options(args.engine_option))
        names = select_engines(factories, args.engines)
        phases = select_phases(args.phases)
    except ValueError as e:
        parser.error(str(e))
    workload = Workload(bench_n(args.n))
    results = Results()
    with tempfile.TemporaryDirectory(prefix="rldb-bench-") as root:
        head = preamble(workload, args.rounds, root, missing_peers())
        failed = run(names, factories, phases, workload, args.rounds, root, results,
                     log=lambda line: print(line, file=sys.stderr, flush=True))
    rldb = [rldb_name(kind) for kind in engine_kinds()]
    print(render(results, rldb, RATIO_PEERS, head))
    if failed:
        print(f"\nFAILED (see the log above): {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
