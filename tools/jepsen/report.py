"""The written outputs of a run: results.json (every figure, for machines)
and report.txt (the same as tables, for people), with the verdict and,
when the run is not valid, exactly which checks failed."""
import json

CHECK_ROWS = {
    "set": (("attempted", "adds attempted"), ("ok", "adds acknowledged (ok)"),
            ("info", "adds indeterminate (info)"), ("fail", "adds failed (fail)"),
            ("final_elements", "elements in the final reads"),
            ("lost", "lost (ok, absent at the end)"),
            ("unexpected", "unexpected (present, never attempted)"),
            ("recovered", "indeterminate recovered (info, present)"),
            ("applied_nowhere_found", "applied-nowhere found (fail, seen)")),
    "deletes": (("attempted", "writes attempted"), ("ok", "writes acknowledged (ok)"),
                ("info", "writes indeterminate (info)"), ("fail", "writes failed (fail)"),
                ("deletes_ok", "deletes acknowledged"), ("deletes_info", "deletes indeterminate"),
                ("deletes_fail", "deletes failed"),
                ("zombies", "zombies (seen by an ok delete, present)"),
                ("lost", "lost writes (ok, absent, not superseded)"),
                ("lost_seen_by_failed", "  of which a fail op had read"),
                ("superseded_absent", "ok writes absent but superseded"),
                ("unexpected", "unexpected (present, never attempted)"),
                ("recovered", "indeterminate recovered (info, present)"),
                ("applied_nowhere_found", "applied-nowhere found (fail, seen)")),
}
SAFETY = {"lost", "unexpected", "applied_nowhere_found", "zombies"}


def write_json(path, results):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True, default=_plain)
        f.write("\n")


def _plain(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _quorum(results):
    q = results.get("node_config", {}).get("quorum", {})
    return f"n={q.get('n')} r={q.get('r')} w={q.get('w')}"


def _pct(row):
    if not row or not row.get("ops"):
        return f"{'-':>6} {'-':>7}"
    return f"{row['ops']:>6} {100 * row['fraction_ok']:>6.1f}%"


def render(results):
    """report.txt's text."""
    p = results.get("params", {})
    lines = [f"rldb Jepsen-style test: {'VALID' if results.get('valid') else 'INVALID'}", ""]
    lines.append(f"seed {p.get('seed')}, {p.get('nodes')} nodes, {p.get('duration')} s of "
                 f"faults, workload {p.get('workload')}, nemesis {','.join(p.get('nemesis', []))}, "
                 f"{p.get('clients')} clients at {p.get('rate')} ops/s in all")
    if p.get("subnet"):
        lines.append(f"network {p['subnet']} (clients on {p.get('bridge_addr')}), quorum "
                     f"{_quorum(results)}, final reads r={p.get('final_r')}")
    if results.get("error"):
        lines += ["", f"ERROR: {results['error']}"]
    failed = results.get("failed_checks", [])
    if failed:
        lines += ["", "Failed checks:"] + [f"  - {line}" for line in failed]
    for workload, rows in CHECK_ROWS.items():
        result = results.get("checks", {}).get(workload)
        if result is None:
            continue
        lines += ["", f"{workload} workload", f"  {'figure':<45} {'count':>8}  verdict"]
        for name, label in rows:
            value = result.get(name, 0)
            verdict = ("FAIL" if value else "ok") if name in SAFETY else ""
            lines.append(f"  {label:<45} {value:>8}  {verdict}".rstrip())
            if name in SAFETY and value:
                lines.append(f"  {'':<45} e.g. {result.get(name + '_sample', [])[:10]}")
    conv = results.get("convergence")
    if conv:
        lines.append("")
        if conv.get("converged"):
            lines.append(f"convergence: all nodes agreed {conv['convergence_s']:.2f} s after the "
                         f"final heal ({conv['rounds']} rounds of final reads)")
        else:
            lines.append(f"convergence: NOT converged within {conv.get('limit_s')} s; "
                         f"{len(conv.get('disagreeing_keys', []))} keys differ, e.g. "
                         f"{conv.get('disagreeing_keys', [])[:8]}")
    counters = results.get("node_counters")
    if counters:
        lines += ["", "the nodes' work, summed over their STATS: " + ", ".join(
            f"{name} {value}" for name, value in counters.items())]
    outcomes = results.get("outcomes", {})
    if outcomes:
        lines += ["", "ops by outcome: " + "; ".join(
            f"{w}: {c['ok']} ok, {c['info']} info, {c['fail']} fail" for w, c in outcomes.items())]
    avail = results.get("availability", {})
    if avail:
        lines += ["", "availability: fraction of ops ok, by the phase an op started in",
                  f"  {'phase':<20} {'faulty node: ops':>17} {'ok':>7}   {'other nodes: ops':>17} {'ok':>7}"]
        for kind in sorted(avail, key=lambda k: (k != "healthy", k)):
            rows = avail[kind]
            faulty, other = _pct(rows.get("faulty")).split(), _pct(rows.get("other")).split()
            lines.append(f"  {kind:<20} {faulty[0]:>17} {faulty[1]:>7}   {other[0]:>17} {other[1]:>7}")
    nem = results.get("nemesis", {})
    if nem.get("intervals"):
        lines += ["", "nemesis (history seconds)"]
        for iv in nem["intervals"]:
            lines.append(f"  {iv['start']:7.2f} .. {iv['end']:7.2f}  {iv['kind']:<18} "
                         f"{iv['detail']:<34} faulty: {','.join(iv['faulty']) or '-'}")
        if nem.get("final_heal_t") is not None:
            lines.append(f"  {nem['final_heal_t']:7.2f}             final heal")
    if nem.get("skew_unsupported"):
        lines += ["", f"note: clock skew was not applied on {', '.join(nem['skew_unsupported'])}: "
                  "the server does not handle SIGUSR2 (offset files were written only)"]
    timing = results.get("timing", {})
    if timing:
        lines += ["", "timing: " + ", ".join(f"{k} {v}" for k, v in timing.items())]
    return "\n".join(lines) + "\n"


def write_report(path, results):
    text = render(results)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text
