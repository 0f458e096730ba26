"""``--plot``: a figure for a paper. GB/s by folio size per backend (bars with the
interquartile range of the runs, the rooflines as labelled lines), and the speedup over
cpu-serial (points with the range over runs, the cpu-serial baseline at 1x). Folio
sizes are categories, not a continuous axis; one legend under both panels; the machine,
date and tool version in a caption; colour-blind-safe colours (Okabe-Ito)."""

from __future__ import annotations

#: Okabe-Ito, ordered so that no red sits beside a green; cpu-serial is grey.
COLOURS = ("#0072B2", "#E69F00", "#56B4E9", "#CC79A7", "#009E73", "#D55E00", "#F0E442")
BASELINE = "cpu-serial"
BASELINE_COLOUR = "#7F7F7F"


def plot_table(doc: dict, sizes: list[int], path: str, title: str) -> None:
    """Draw the results of the JSON document *doc* and save a PNG at *path*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from offload.sizes import format_size

    results = doc["results"]
    backends = list(dict.fromkeys(r["backend"] for r in results))
    cell = {(r["backend"], r["folio_size"]): r for r in results}
    colour = {}
    others = iter(COLOURS * 4)
    for b in backends:
        colour[b] = BASELINE_COLOUR if b == BASELINE else next(others)
    x = np.arange(len(sizes))
    width = 0.8 / max(1, len(backends))
    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(7.2, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    emulated = {r["backend"] for r in results if r.get("emulated")}
    handles = []
    for i, b in enumerate(backends):
        med, lo, hi = [], [], []
        for s in sizes:
            runs = np.asarray(cell[b, s]["gbps"] if (b, s) in cell else [np.nan])
            m = float(np.median(runs))
            q1, q3 = np.percentile(runs, [25, 75])
            med.append(m)
            lo.append(m - q1)
            hi.append(q3 - m)
        h = ax.bar(
            x - 0.4 + width * (i + 0.5),
            med,
            width * 0.92,
            yerr=[lo, hi],
            capsize=1.5,
            error_kw={"elinewidth": 0.7},
            color=colour[b],
            label=b,
            hatch="//" if b in emulated else None,  # emulated: a model's speed, not measured
        )
        handles.append(h)
    xmax = len(sizes) - 0.5
    lines = [("memcpy, 1 thread", doc.get("roofline_gbps"), "--")]
    if doc.get("roofline_mt_gbps"):
        lines.append(
            (f"memcpy, {doc.get('roofline_mt_threads')} threads", doc["roofline_mt_gbps"], ":")
        )
    for label, value, style in lines:
        if value:
            ax.axhline(value, color="k", linestyle=style, linewidth=0.8)
            ax.text(xmax, value, f" {label}", va="center", ha="left", fontsize=7)
    ax.set_ylabel("GB/s (median, IQR of runs)")
    ax.set_xlim(-0.5, xmax)
    ax.set_title(title, fontsize=9, loc="left")
    # speedup over cpu-serial: points with the range over runs, no lines between sizes
    ax2.axhline(1.0, color=BASELINE_COLOUR, linewidth=1.2)
    ax2.text(xmax, 1.0, f" {BASELINE} (1x)", va="center", ha="left", fontsize=7)
    for i, b in enumerate(backends):  # each point above its bar
        if b == BASELINE:
            continue
        for j, s in enumerate(sizes):
            base = cell.get((BASELINE, s))
            if (b, s) not in cell or base is None:
                continue
            ratios = np.asarray(cell[b, s]["gbps"]) / base["gbps_median"]
            m = float(np.median(ratios))
            ax2.errorbar(
                j - 0.4 + width * (i + 0.5),
                m,
                yerr=[[m - ratios.min()], [ratios.max() - m]],
                fmt="o",
                markersize=3.5,
                capsize=1.5,
                elinewidth=0.7,
                color=colour[b],
            )
    ax2.set_ylabel(f"speedup over {BASELINE}\n(median, range of runs)")
    ax2.set_ylim(bottom=0)
    ax2.set_xticks(x, [format_size(s) for s in sizes])
    ax2.set_xlabel("folio size")
    for a in (ax, ax2):
        a.grid(axis="y", linewidth=0.3, alpha=0.6)
        a.set_axisbelow(True)
    fig.legend(
        handles=handles,
        labels=[f"{b} (emulated)" if b in emulated else b for b in backends],
        loc="lower center",
        ncol=min(4, len(backends)),
        frameon=False,
        fontsize=7,
        bbox_to_anchor=(0.5, 0.045),
    )
    m = doc.get("machine", {})
    tool = doc.get("tool", {})
    n_runs = max((int(r.get("runs", 0)) for r in results), default=0)
    fig.text(
        0.01,
        0.005,
        f"{m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs; {doc.get('layout', '?')} memory; "
        f"{n_runs} runs per cell; {tool.get('name', 'folio-offload')} {tool.get('version', '')}, "
        f"{doc.get('date', '')}",
        fontsize=6,
        color="#444444",
    )
    rows_legend = (len(backends) + 3) // 4
    fig.tight_layout(rect=(0, 0.06 + 0.03 * rows_legend, 0.88, 1))
    fig.savefig(path, dpi=200)
    plt.close(fig)
