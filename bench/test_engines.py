"""One benchmark per (engine, phase); conftest.py parametrizes them and prints the table.

Each round of benchmark.pedantic runs the whole phase once; the table uses the median round."""
import pytest


def test_phase(engine, phase, benchmark, bench_rounds, bench_results):
    step = engine.step(phase)
    if step is None:
        pytest.skip(f"{phase} is n/a for {engine.name}")
    benchmark.group = phase
    benchmark.extra_info["ops_per_round"] = step.ops
    benchmark.pedantic(step.target, setup=step.setup, rounds=bench_rounds, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable
        bench_results.record(engine, phase, benchmark.stats.stats.median, step.ops)
