"""The parent side of the disk engines' crash tests: runs crash_writer.py,
kills it with SIGKILL at a random moment, and checks that what the reopened
engine holds is the state after a prefix of the writes that includes every
acknowledged one and at most the one in flight.

    run = CrashRun("lsm", path, seed, count, options, KillPlan(1500, 0.4, 0.005))
    for rnd in run.rounds(4, rng):         # one writer run and kill per round
        with open_engine("lsm", path, **options) as db:
            run.check(dict(db.scan()))     # the prefix assertions
            ...                            # the engine's own checks

Each round's writer starts after the prefix that survived the last one, so
recovery also has to cope with a database that was itself recovered."""
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import rldb

from .crash_writer import operations

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rldb.__file__)))


def child_env():
    """The environment of a child that must import this rldb."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn(script, *args):
    """`python script ARGS` with stdout and stderr piped."""
    return subprocess.Popen([sys.executable, str(script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def read_lines(proc, stop, limit=60.0):
    """Lines the child printed until stop(lines) is true or it closes its
    stdout; (lines, the unfinished rest).  Fails after `limit` seconds."""
    lines, buf = [], b""
    fd = proc.stdout.fileno()
    started = time.monotonic()
    while not stop(lines):
        assert time.monotonic() - started < limit, "the child made no progress"
        ready, _, _ = select.select([fd], [], [], 0.005)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += done
    return lines, buf


class KillPlan(NamedTuple):
    """When a round kills the writer.  Even rounds: once it has acknowledged
    a number of operations drawn from [1, max_acks), then after up to
    `linger` seconds more (somewhere inside a later operation); odd rounds:
    up to `max_delay` seconds after its first acknowledgement."""
    max_acks: int
    max_delay: float
    linger: float = 0.0


def run_and_kill(engine, path, seed, start, count, options, plan, rng, round_no):
    """Starts the writer at operation `start`, kills it with SIGKILL as
    `plan` says, and returns (indices it acknowledged, whether it finished)."""
    proc = spawn(WRITER, engine, path, seed, start, count, json.dumps(options))
    if round_no % 2 == 0:
        target = rng.randrange(1, plan.max_acks)
        stop = lambda lines: len(lines) >= target  # noqa: E731
    else:
        deadline = []

        def stop(lines):
            if lines and not deadline:
                deadline.append(time.monotonic() + rng.uniform(0.0, plan.max_delay))
            return bool(deadline) and time.monotonic() >= deadline[0]

    lines, buf = read_lines(proc, stop)
    if round_no % 2 == 0 and plan.linger:
        time.sleep(rng.uniform(0, plan.linger))
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    lines += (buf + rest).split(b"\n")
    lines = [line for line in lines if line]
    finished = bool(lines) and lines[-1] == b"done"
    if finished:
        lines.pop()
    else:
        assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    indices = [int(line) for line in lines]
    assert indices == list(range(start, start + len(indices))), "acknowledgements out of order"
    return indices, finished


def apply_steps(model, steps):
    for step in steps:
        if step[0] == "put":
            model[step[1]] = step[2]
        else:
            model.pop(step[1], None)


def model_at(ops, p):
    """The contents after ops[:p]."""
    model = {}
    for steps in ops[:p]:
        apply_steps(model, steps)
    return model


def consistent_prefixes(ops, start, model_at_start, state, limit):
    """Every p in [start, limit] such that the state after ops[:p] equals state."""
    model = dict(model_at_start)
    diff = {k for k in set(model) | set(state) if model.get(k) != state.get(k)}
    found = [start] if not diff else []
    for p in range(start, limit):
        for step in ops[p]:
            key = step[1]
            if step[0] == "put":
                model[key] = step[2]
            else:
                model.pop(key, None)
            if model.get(key) == state.get(key):
                diff.discard(key)
            else:
                diff.add(key)
        if not diff:
            found.append(p + 1)
    return found


def check_prefix(ops, start, model, state, acknowledged, round_no):
    """Asserts that `state` (an engine's whole contents) is the state after a
    prefix of ops that holds every one of the `acknowledged` operations and
    at most the one in flight, where ops[:start] gave `model`; the prefixes
    it matches."""
    prefixes = consistent_prefixes(ops, start, model, state, len(ops))
    assert prefixes, (
        f"round {round_no}: the state after the crash is not the state after any "
        f"prefix of the writes ({acknowledged} were acknowledged)")
    assert max(prefixes) >= acknowledged, (
        f"round {round_no}: acknowledged writes lost: the state matches prefixes "
        f"{prefixes[:5]}..{prefixes[-5:]} but {acknowledged} were acknowledged")
    assert min(prefixes) <= acknowledged + 1, (
        f"round {round_no}: writes after the one in flight are present: the state is the one "
        f"after {min(prefixes)} operations, {acknowledged} were acknowledged")
    assert acknowledged in prefixes or acknowledged + 1 in prefixes, (
        f"round {round_no}: the state matches prefixes {prefixes}, none of them "
        f"{acknowledged} (acknowledged) or {acknowledged + 1} (one in flight)")
    return prefixes


class Round(NamedTuple):
    number: int
    acknowledged: int   # ops[:acknowledged] were acknowledged
    finished: bool      # the writer got to the end before the kill
    in_flight: list     # the steps of the operation that may or may not have landed


class CrashRun:
    """One directory that the writer fills round after round, killed each time."""

    def __init__(self, engine, path, seed, count, options, plan):
        self.engine, self.path, self.seed, self.options, self.plan = (
            engine, str(path), seed, options, plan)
        self.ops = operations(engine, seed, count)
        self.start, self.model = 0, {}
        self._round = None

    def rounds(self, count, rng):
        """Up to `count` rounds, fewer if the writer finishes; after each, the
        caller reopens the engine and passes its contents to check()."""
        for number in range(count):
            acked, finished = run_and_kill(self.engine, self.path, self.seed, self.start,
                                           len(self.ops), self.options, self.plan, rng, number)
            acknowledged = self.start + len(acked)
            in_flight = self.ops[acknowledged] if acknowledged < len(self.ops) else []
            self._round = Round(number, acknowledged, finished, in_flight)
            yield self._round
            assert self._round is None, "check() was not called on the reopened engine"
            if finished:
                return

    def check(self, state):
        """The prefix assertions on the reopened engine's whole contents; the
        next round starts after the prefix that survived."""
        rnd, self._round = self._round, None
        prefixes = check_prefix(self.ops, self.start, self.model, state, rnd.acknowledged,
                                rnd.number)
        self.start = rnd.acknowledged if rnd.acknowledged in prefixes else rnd.acknowledged + 1
        self.model = model_at(self.ops, self.start)
        return prefixes

    def acknowledged_model(self, rnd):
        """The contents after every acknowledged operation of `rnd`."""
        return model_at(self.ops, rnd.acknowledged)
