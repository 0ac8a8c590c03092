"""python -m tools.jepsen: one Jepsen-style run of real rldb-server
processes under real faults, from the command line's options to the
verdict (exit 0 valid, 1 not valid or not completed, 77 skipped: this
machine lacks root, `ip` or `iptables`).

The run: sweep what dead runs left, build the network, start and join the
nodes, run the clients and the nemesis for --duration seconds, stop the
clients, heal everything, read every key from every node until they agree,
check, write the outputs.  Teardown (processes, namespaces, bridge) runs
in a finally, at exit and on SIGINT/SIGTERM/SIGHUP; a harness killed with
SIGKILL takes its nodes along (parent-death signal) and the next run
removes its namespaces and bridge."""
import argparse
import asyncio
import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tools.jepsen import checker, converge, netns, nemesis, plot, report, workloads
from tools.jepsen.cluster import Cluster
from tools.jepsen.history import History

SKIPPED = 77


def _json_arg(text):
    """A JSON object given inline or as @FILE."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _kinds(text):
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in nemesis.KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown nemesis {bad} (known: {','.join(nemesis.KINDS)})")
    return kinds


def _range(text):
    low, _, high = text.partition(",")
    low, high = float(low), float(high or low)
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError("must be LOW,HIGH seconds with 0 < LOW <= HIGH")
    return low, high


def parser():
    ap = argparse.ArgumentParser(prog="python -m tools.jepsen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=5, choices=range(3, 10), metavar="N",
                    help="nodes in the cluster, 3..9 (default 5)")
    ap.add_argument("--duration", type=float, default=120.0,
                    help="seconds of workload under faults (default 120)")
    ap.add_argument("--seed", type=int, default=1, help="seeds the nemesis schedule and clients")
    ap.add_argument("--workload", choices=("set", "deletes", "both"), default="both")
    ap.add_argument("--nemesis", type=_kinds, default=list(nemesis.KINDS),
                    help="comma-separated faults: partition,pause,kill,skew (default all)")
    ap.add_argument("--clients", type=int, default=10, help="client tasks (default 10)")
    ap.add_argument("--rate", type=float, default=100.0, help="ops/s over all clients (default 100)")
    ap.add_argument("--fault-time", type=_range, default=(3.0, 6.0), metavar="LOW,HIGH",
                    help="seconds each fault lasts (default 3,6)")
    ap.add_argument("--heal-time", type=_range, default=(2.0, 4.0), metavar="LOW,HIGH",
                    help="seconds of calm after each fault (default 2,4)")
    ap.add_argument("--converge-timeout", type=float, default=60.0,
                    help="bound on the final reads after the final heal (default 60 s)")
    ap.add_argument("--final-r", type=int, default=1, help="r of the final reads (default 1)")
    ap.add_argument("--set-keys", type=int, default=workloads.SET_KEYS)
    ap.add_argument("--delete-keys", type=int, default=workloads.DELETE_KEYS)
    ap.add_argument("--node-config", type=_json_arg, default={}, metavar="JSON|@FILE",
                    help="merged into every node's config; {node}, {host}, {dir} in strings "
                         "become the node's name, address and directory")
    ap.add_argument("--client-args", type=_json_arg, default={}, metavar="JSON|@FILE",
                    help="extra keyword arguments for every rldb.net.client.AsyncClient")
    ap.add_argument("--subnet", default=None, help="a /24 for the nodes (default: a free 10.77.X.0/24)")
    ap.add_argument("--out", default=None,
                    help="output directory (default: a new rldb-jepsen-* temporary directory)")
    ap.add_argument("--keep-data", action="store_true", help="keep the nodes' data directories")
    ap.add_argument("--server-log-level", default="info",
                    choices=("debug", "info", "warning", "error"))
    ap.add_argument("--quiet", action="store_true", help="print only the verdict")
    return ap


class Run:
    """One run's resources and results; teardown() is safe to call twice."""

    def __init__(self, args, out):
        self.args = args
        self.out = out
        self.work = Path(tempfile.mkdtemp(prefix=f"rldb-jepsen-{os.getpid()}-"))
        self.network = netns.Network(args.nodes, args.subnet)
        self.cluster = None
        self.history = History()
        self.nemesis = None
        self.results = {"completed": False, "params": self.params()}
        self._torn_down = False

    def say(self, text):
        if not self.args.quiet:
            print(text, flush=True)

    def params(self):
        a = self.args
        return {"seed": a.seed, "nodes": a.nodes, "duration": a.duration, "workload": a.workload,
                "nemesis": a.nemesis, "clients": a.clients, "rate": a.rate,
                "fault_time": a.fault_time, "heal_time": a.heal_time,
                "converge_timeout": a.converge_timeout, "final_r": a.final_r, "subnet": str(self.network.subnet),
                "bridge_addr": self.network.bridge_addr, "node_config": a.node_config,
                "client_args": sorted(a.client_args)}

    async def run(self):
        a = self.args
        started = time.monotonic()
        swept = netns.sweep_stale()
        if swept:
            self.say(f"removed what earlier runs left: {', '.join(swept)}")
        self.say(f"network {self.network.subnet}: bridge {self.network.bridge} "
                 f"({self.network.bridge_addr}), namespaces {', '.join(self.network.namespaces)}")
        await asyncio.to_thread(self.network.create)
        self.cluster = Cluster(self.network, self.work, a.node_config, a.client_args,
                               a.server_log_level)
        self.results["node_config"] = self.cluster.nodes[0].config
        await self.cluster.form()
        setup_s = time.monotonic() - started
        self.say(f"cluster of {a.nodes} formed and settled in {setup_s:.1f} s")
        elements = workloads.Elements()
        loads = workloads.make_workloads(a.workload, elements, a.set_keys, a.delete_keys)
        self.history = History()
        self.nemesis = nemesis.Nemesis(self.cluster, self.history, a.seed, a.nemesis,
                                       a.fault_time, a.heal_time, say=self.say)
        stop = asyncio.Event()
        clients = workloads.start_clients(self.cluster, loads, self.history, stop, a.clients,
                                          a.rate, a.seed)
        faults = asyncio.ensure_future(self.nemesis.run(a.duration))
        try:
            await asyncio.wait_for(asyncio.shield(faults), a.duration + 30)
        except asyncio.TimeoutError:
            faults.cancel()
        stop.set()
        done, pending = await asyncio.wait(clients, timeout=self.cluster.request_timeout + 10)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        self.say(f"workload stopped at t={self.history.now():.2f}: {len(self.history.ops)} ops")
        heal_t = await self.nemesis.heal_all()
        for node in self.cluster.nodes:
            await self.cluster.wait_up(node, limit=30)
        keys = [k for w in loads for k in w.keys]
        workload_of = {k: w.name for w in loads for k in w.keys}.get
        conv = await converge.converge(self.cluster, keys, heal_t, self.history,
                                       a.converge_timeout, a.final_r, say=self.say)
        final_t = self.history.now()
        self.results["node_counters"] = await self.node_counters()
        for record in converge.final_records(conv["final"], workload_of, final_t):
            self.history.add(record)
        final = converge.final_values(conv["final"], workload_of)
        ops = self.history.ops
        checks = {}
        for w in loads:
            mine = {k: v for k, v in final.items() if workload_of(k) == w.name}
            check = checker.check_set if w.name == "set" else checker.check_deletes
            checks[w.name] = check(ops, mine)
        conv.pop("final")
        conv["limit_s"] = a.converge_timeout
        conv["converged_t"] = final_t if conv["converged"] else None
        self.results.update(
            completed=True, checks=checks, convergence=conv,
            outcomes=checker.outcome_counts(ops),
            availability=checker.availability(ops, self.nemesis.intervals),
            timing={"setup_s": round(setup_s, 2), "workload_s": round(heal_t, 2),
                    "total_s": round(time.monotonic() - started, 2)})

    async def node_counters(self):
        """The figures of the core's work under the faults, summed over the
        nodes from their STATS: tombstones collected, versions floors
        absorbed, late requests dropped, forwards retried or coordinated."""
        names = ("tombstones_reaped", "floor_absorbed", "collect_orders_resent",
                 "expired_requests", "forwarded", "forward_retries", "forwards_coordinated",
                 "quorum_failures", "read_repairs", "hinted_writes")
        total = dict.fromkeys(names, 0)
        for node in self.cluster.nodes:
            client = self.cluster.client(node, timeout=5.0)
            try:
                figures = await client.stats()
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                self.say(f"no STATS from {node.name}: {exc}")
                continue
            finally:
                await client.close()
            for name in names:
                value = figures.get("cluster", {}).get(name)
                total[name] += value if isinstance(value, int) else 0
        return total

    def finish(self):
        """Verdict and outputs; the exit code."""
        if self.nemesis is not None:
            self.nemesis.close_open_interval()
            self.results["nemesis"] = {
                "intervals": self.nemesis.intervals, "log": self.nemesis.log,
                "final_heal_t": next((e["t"] for e in self.nemesis.log
                                      if e["event"] == "final-heal"), None),
                "skew_unsupported": sorted(self.nemesis.skew_unsupported)}
        valid, failed = checker.verdict(self.results)
        self.results["valid"], self.results["failed_checks"] = valid, failed
        self.out.mkdir(parents=True, exist_ok=True)
        self.history.write(self.out / "history.jsonl")
        report.write_json(self.out / "results.json", self.results)
        text = report.write_report(self.out / "report.txt", self.results)
        try:
            nem = self.results.get("nemesis", {})
            plot.draw(self.out / "timeline.png", self.history.ops, nem.get("intervals", []),
                      nem.get("final_heal_t"), self.results.get("convergence", {}).get("converged_t"),
                      title=f"rldb, seed {self.args.seed}, {self.args.nodes} nodes, "
                            f"workload {self.args.workload}")
        except Exception as exc:  # noqa: BLE001 - a picture must not hide the verdict
            print(f"timeline.png not drawn: {exc}", file=sys.stderr)
        if not self.args.quiet:
            print(text, end="")
        print(f"{'VALID' if valid else 'INVALID'}: outputs in {self.out}", flush=True)
        return 0 if valid else 1

    def teardown(self):
        """Stops every node, copies their logs out, removes the network
        and (unless --keep-data) the data; never raises."""
        if self._torn_down:
            return
        self._torn_down = True
        if self.cluster is not None:
            self.cluster.stop_all()
            logs = self.out / "nodes"
            try:
                logs.mkdir(parents=True, exist_ok=True)
                for node in self.cluster.nodes:
                    if node.log_path.exists():
                        shutil.copyfile(node.log_path, logs / f"{node.name}.log")
                    shutil.copyfile(node.config_path, logs / f"{node.name}.json")
            except OSError as exc:
                print(f"could not copy the node logs: {exc}", file=sys.stderr)
        try:
            errors = self.network.destroy()
            left = self.network.leftovers()
            if errors or left:
                print(f"teardown: {errors} {left}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - teardown goes on
            print(f"teardown of the network failed: {exc}", file=sys.stderr)
        if not self.args.keep_data:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print(f"node data kept in {self.work}", file=sys.stderr)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parser().parse_args(argv)
    missing = netns.missing_requirements()
    if missing:
        print(f"skipped: this run needs {'; '.join(missing)}", file=sys.stderr)
        return SKIPPED
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rldb-jepsen-out-"))
    run = Run(args, out)
    atexit.register(run.teardown)
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and
    # the run must still tear down on it
    previous = {sig: signal.signal(sig, _interrupt)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            asyncio.run(run.run())
        except KeyboardInterrupt:
            run.results["error"] = "interrupted"
            print("interrupted: tearing down", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - any failure still tears down and reports
            run.results["error"] = f"{type(exc).__name__}: {exc}"
            print(f"run failed: {run.results['error']}", file=sys.stderr)
        finally:
            run.teardown()
        code = run.finish()
        return 130 if run.results.get("error") == "interrupted" else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
