"""``--plot``: a figure for a paper. GB/s by folio size per backend (bars: the median
and its MAD over the runs, the spread the table shows), the references as labelled lines
(the C page loop and memcpy on each thread count, timed in turn with the rows; a segment
over each column where they were kept per folio size, as each size's rows are judged), the
series' published rows with ``--published`` (hollow markers), and the speedup over
cpu-serial (points: median and MAD of the run-by-run ratios). Folio sizes are categories,
not a continuous axis; one legend under both panels; the machine, date and tool version
in a caption; colour-blind-safe colours (Okabe-Ito); emulated rows hatched."""

from __future__ import annotations

#: Okabe-Ito, ordered so that no red sits beside a green; cpu-serial is grey.
COLOURS = ("#0072B2", "#E69F00", "#56B4E9", "#CC79A7", "#009E73", "#D55E00", "#F0E442")
BASELINE = "cpu-serial"
BASELINE_COLOUR = "#7F7F7F"


def _median_mad(values) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    m = float(np.median(v))
    return m, float(np.median(np.abs(v - m)))


#: Figure sizes (inches) and base font sizes: a page-wide figure, or one column of a
#: two-column paper (3.4 in), whose text stays legible printed at that size
SIZES_IN = {"page": ((7.2, 6.4), 9.0), "column": ((3.4, 4.6), 7.0)}


def plot_table(
    doc: dict,
    sizes: list[int],
    path: str,
    title: str,
    published: bool = False,
    size: str = "page",
) -> None:
    """Draw the results of the JSON document *doc* and save the figure at *path* (its
    format from the suffix), *size* ``page`` or ``column`` wide."""
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
    (fig_w, fig_h), font = SIZES_IN[size]
    small = font * 0.75  # labels of lines, legend
    plt.rcParams.update({"font.size": font, "axes.spines.top": False, "axes.spines.right": False})
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(fig_w, fig_h), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    emulated = {r["backend"] for r in results if r.get("emulated")}
    handles = []
    legend_labels_extra: list[str] = []
    for i, b in enumerate(backends):
        med, spread = [], []
        for s in sizes:
            m, d = _median_mad(cell[b, s]["gbps"] if (b, s) in cell else [np.nan])
            med.append(m)
            spread.append(d)
        h = ax.bar(
            x - 0.4 + width * (i + 0.5),
            med,
            width * 0.92,
            yerr=spread,
            capsize=1.5,
            error_kw={"elinewidth": 0.7},
            color=colour[b],
            label=b,
            hatch="//" if b in emulated else None,  # emulated: a model's speed, not measured
        )
        handles.append(h)
    xmax = len(sizes) - 0.5
    refs = doc.get("references") or {}
    lines = []
    styles = {"memcpy": ("--", ":"), "page_loop": ("-.", (0, (1, 3)))}
    names = {"memcpy": "memcpy", "page_loop": "C page loop"}
    #: per reference: its label, its figure (the whole run's), its style, and its figure
    #: per column where the passes were kept per folio size (each size's rows are judged
    #: by those of their own rounds: drawn as a segment over each column)
    per_size: dict[str, list[float]] = {}
    for kind in ("memcpy", "page_loop"):
        for k, (t, ref) in enumerate(sorted(refs.get(kind, {}).items(), key=lambda x: int(x[0]))):
            label = f"{names[kind]}, {t} thr"
            own = ref.get("by_size", {})
            if all(str(s) in own for s in sizes):
                per_size[label] = [float(own[str(s)]["gbps"]) for s in sizes]
            value = per_size[label][-1] if label in per_size else ref["gbps"]
            lines.append((label, value, styles[kind][min(k, 1)]))
    if not lines:  # a document without per-thread references: the rooflines it has
        lines = [("memcpy, 1 thread", doc.get("roofline_gbps"), "--")]
        if doc.get("roofline_mt_gbps"):
            lines.append(
                (f"memcpy, {doc.get('roofline_mt_threads')} threads", doc["roofline_mt_gbps"], ":")
            )
    placed: list[float] = []
    top = max([v for _, v, _ in lines if v] + [v for vs in per_size.values() for v in vs] + [0.0])
    for label, value, style in sorted(lines, key=lambda x: x[1] or 0):
        if label in per_size:
            ax.hlines(per_size[label], x - 0.48, x + 0.48, colors="k", linestyles=style, lw=0.7)
        elif value:
            ax.axhline(value, color="k", linestyle=style, linewidth=0.7)
        if value:
            # labels of references close together are nudged apart, never on each other
            y = max([value] + [p + 0.045 * top for p in placed if abs(p - value) < 0.045 * top])
            placed.append(y)
            ax.text(xmax, y, f" {label}", va="center", ha="left", fontsize=small)
    pub = (doc.get("reference") or {}).get("gbps", {}) if published else {}
    for k, (label, vals) in enumerate(pub.items()):
        xs = [j for j, s in enumerate(sizes) if str(s) in vals]
        h = ax.scatter(
            [x - 0.4 + 0.8 * (k + 0.5) / max(1, len(pub)) for x in xs],
            [vals[str(sizes[j])] for j in xs],
            marker="D",
            s=14,
            facecolors="none",
            edgecolors=COLOURS[(k + 3) % len(COLOURS)],
            linewidths=0.9,
            zorder=3,
        )
        handles.append(h)
        legend_labels_extra.append(f"published: {label}")
    ax.set_ylabel("GB/s (median ± MAD of runs)")
    ax.set_xlim(-0.5, xmax)
    ax.set_title(title, fontsize=font if size == "page" else small, loc="left", wrap=True)
    # speedup over cpu-serial: points with the range over runs, no lines between sizes
    ax2.axhline(1.0, color=BASELINE_COLOUR, linewidth=1.2)
    ax2.text(xmax, 1.0, f" {BASELINE} (1x)", va="center", ha="left", fontsize=small)
    for i, b in enumerate(backends):  # each point above its bar
        if b == BASELINE:
            continue
        for j, s in enumerate(sizes):
            base = cell.get((BASELINE, s))
            if (b, s) not in cell or base is None:
                continue
            ra, rb = np.asarray(cell[b, s]["gbps"]), np.asarray(base["gbps"])
            # run by run where the rows took turns (same rounds), else over the median
            ratios = ra / rb if ra.size == rb.size else ra / base["gbps_median"]
            m, d = _median_mad(ratios)
            ax2.errorbar(
                j - 0.4 + width * (i + 0.5),
                m,
                yerr=d,
                fmt="o",
                markersize=3.5,
                capsize=1.5,
                elinewidth=0.7,
                color=colour[b],
            )
    ax2.set_ylabel(f"speedup over {BASELINE}\n(median ± MAD of runs)")
    ax2.set_ylim(bottom=0)
    ax2.set_xticks(x, [format_size(s) for s in sizes])
    ax2.set_xlabel("folio size")
    for a in (ax, ax2):
        a.grid(axis="y", linewidth=0.3, alpha=0.6)
        a.set_axisbelow(True)
    fig.legend(
        handles=handles,
        labels=[f"{b} (emulated)" if b in emulated else b for b in backends] + legend_labels_extra,
        loc="lower center",
        ncol=min(4 if size == "page" else 2, len(backends) + len(legend_labels_extra)),
        frameon=False,
        fontsize=small,
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
        fontsize=small * 0.85,
        color="#444444",
    )
    per_row = 4 if size == "page" else 2
    rows_legend = (len(backends) + len(legend_labels_extra) + per_row - 1) // per_row
    legend_h = (0.03 if size == "page" else 0.035) * rows_legend
    fig.tight_layout(rect=(0, 0.06 + legend_h, 0.86 if size == "page" else 0.78, 1))
    fig.savefig(path, dpi=200)
    plt.close(fig)
