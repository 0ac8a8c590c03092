"""timeline.png, as Jepsen draws it: one row per client (labelled with its
node and workload), each op a bar from its start to its end coloured by
outcome, the nemesis intervals shaded and labelled, the final heal and the
convergence marked."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

COLOURS = {"ok": "#2ca02c", "info": "#ff7f0e", "fail": "#d62728"}
SHADES = {"partition": "#9ecae1", "pause": "#c7e9c0", "kill": "#fcbba1", "skew": "#dadaeb"}


def _shade(kind):
    return SHADES.get(kind.split("-")[0], "#eeeeee")


def draw(path, ops, intervals, final_heal_t=None, converged_t=None, title=""):
    """Writes the picture to path."""
    work = [op for op in ops if op.get("f") != "final-read" and op.get("end") is not None]
    clients = sorted({op["client"] for op in work})
    label = {}
    for op in work:
        label.setdefault(op["client"], f"c{op['client']} {op['node']} {op['workload']}")
    row = {client: i for i, client in enumerate(clients)}
    height = max(3.0, 0.45 * len(clients) + 1.8)
    fig, ax = plt.subplots(figsize=(16, height))
    end = max([op["end"] for op in work] + [final_heal_t or 0, converged_t or 0, 1])
    for iv in intervals:
        stop = iv["end"] if iv["end"] is not None else end
        ax.axvspan(iv["start"], stop, color=_shade(iv["kind"]), alpha=0.55, lw=0)
        faulty = ",".join(iv["faulty"])
        ax.text((iv["start"] + stop) / 2, len(clients) - 0.35,
                iv["kind"] + (f"\n{faulty}" if faulty else ""), ha="center", va="bottom",
                fontsize=7, clip_on=False)
    for outcome, colour in COLOURS.items():
        mine = [op for op in work if op["type"] == outcome]
        if not mine:
            continue
        ax.hlines([row[op["client"]] for op in mine], [op["start"] for op in mine],
                  [max(op["end"], op["start"] + 0.02) for op in mine], colors=colour,
                  linewidth=5, label=f"{outcome} ({len(mine)})")
    if final_heal_t is not None:
        ax.axvline(final_heal_t, color="black", linestyle="--", lw=1)
        ax.text(final_heal_t, -0.55, "final heal ", fontsize=7, va="center", ha="right")
    if converged_t is not None:
        ax.axvline(converged_t, color="#2ca02c", linestyle=":", lw=1.5)
        ax.text(converged_t, -0.95, " converged", fontsize=7, va="center", color="#2ca02c")
    ax.set_yticks(range(len(clients)))
    ax.set_yticklabels([label[c] for c in clients], fontsize=8)
    ax.set_ylim(-1.2, len(clients) + 0.6)
    ax.set_xlim(0, end * 1.01)
    ax.set_xlabel("seconds since the workload started")
    ax.set_title(title, fontsize=10, pad=26)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
