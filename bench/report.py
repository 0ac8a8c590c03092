"""The results table: engines by phases, the rldb-to-peer ratios and the memory engine's targets."""
import os

# (column, header); every figure is the median round
COLUMNS = (
    ("load", "load put/s"),
    ("reopen", "reopen ms"),
    ("get", "get/s"),
    ("get_absent", "absent get/s"),
    ("scan", "scan keys/s"),
    ("sync_put", "sync put/s"),
    ("disk", "disk MB"),
)
LOWER_IS_BETTER = {"reopen", "disk"}

# (rldb engine, ceiling, column, target, what): the memory engine's targets
TARGETS = (
    ("memory", "dict", "get", 0.5, "get"),
    ("memory", "sorteddict", "load", 0.8, "put (load phase)"),
)


class Results:
    def __init__(self):
        self.rows = {}  # engine -> {column: figure}
        self.sync_notes = {}  # engine -> what its sync_put does

    def record(self, run, phase, median_seconds, ops):
        """A phase's median round time: ops/s, or ms for reopen.  Also takes the
        store's bytes on disk and its sync note when it has them."""
        row = self.rows.setdefault(run.name, {})
        row[phase] = median_seconds * 1000 if phase == "reopen" else ops / median_seconds
        if run.disk_bytes is not None:
            row["disk"] = run.disk_bytes / 1e6
        if phase == "sync_put":
            self.sync_notes[run.name] = run.adapter.sync_note

    def ratio(self, engine, peer, column):
        """> 1 means `engine` is better: engine/peer for rates, peer/engine for ms and MB."""
        a = self.rows.get(engine, {}).get(column)
        b = self.rows.get(peer, {}).get(column)
        if a is None or b is None or a == 0 or b == 0:
            return None
        return b / a if column in LOWER_IS_BETTER else a / b


def _figure(column, value):
    if value is None:
        return "n/a"
    if column == "reopen":
        return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
    if column == "disk":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _ratio(value):
    return "n/a" if value is None else f"{value:.2f}x"


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def render(results, rldb_engines, peers, preamble=()):
    """The whole report as text.  rldb_engines: the rldb rows; peers: what they are compared with."""
    columns = [c for c, _ in COLUMNS if any(c in row for row in results.rows.values())]
    headers = dict(COLUMNS)
    lines = list(preamble)

    lines += ["", "Results (median round of each phase; n/a: the phase does not apply to the store)"]
    rows = [[name] + [_figure(c, row.get(c)) for c in columns] for name, row in results.rows.items()]
    lines += _table(["engine"] + [headers[c] for c in columns], rows)

    ratio_rows = [[f"{engine} / {peer}"] + [_ratio(results.ratio(engine, peer, c)) for c in columns]
                  for engine in rldb_engines if engine in results.rows
                  for peer in peers if peer in results.rows]
    if ratio_rows:
        lines += ["", "rldb / peer ratios: > 1 means rldb is better.  Rates: rldb / peer; "
                      "reopen ms and disk MB: peer / rldb (the inverse, so that > 1 is still better)"]
        ratio_headers = [headers[c] + (" (peer/rldb)" if c in LOWER_IS_BETTER else "") for c in columns]
        lines += _table(["ratio"] + ratio_headers, ratio_rows)

    target_lines = []
    for engine, ceiling, column, target, what in TARGETS:
        r = results.ratio(engine, ceiling, column)
        if r is not None:
            verdict = "met" if r >= target else "NOT met"
            target_lines.append(f"  {engine} / {ceiling} {what}: {r:.2f}x  (target >= {target}x: {verdict})")
    if target_lines:
        lines += ["", "Memory engine targets:"] + target_lines

    if results.sync_notes:
        lines += ["", "What sync put means per store:"]
        lines += [f"  {name}: {note}" for name, note in results.sync_notes.items()]
    return "\n".join(lines)


def filesystem(path):
    """The type of the filesystem that holds path, from /proc/mounts (or '?')."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount = parts[1]
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def preamble(workload, rounds, root, skipped=()):
    lines = [f"rldb storage-engine benchmark: N={workload.n:,} keys (16-byte keys, 100-byte values), "
             f"rounds per phase: {rounds}, seed {workload.seed}",
             f"data under {root} ({filesystem(root)})"]
    if skipped:
        lines.append(f"not installed, skipped: {', '.join(skipped)}")
    return lines
