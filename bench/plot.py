"""``--plot``: grouped bars of GB/s by folio size per backend, and speedup lines."""

from __future__ import annotations


def plot_table(
    results: list[dict], sizes: list[int], roofline: float, path: str, title: str
) -> None:
    """Draw the results like the series' chart and save a PNG at *path*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from offload.sizes import format_size

    backends = list(dict.fromkeys(r["backend"] for r in results))
    cell = {(r["backend"], r["folio_size"]): r for r in results}
    x = np.arange(len(sizes))
    width = 0.8 / max(1, len(backends))
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(11, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    for i, b in enumerate(backends):
        med = [cell[(b, s)]["gbps_median"] if (b, s) in cell else 0 for s in sizes]
        sd = [cell[(b, s)]["gbps_stdev"] if (b, s) in cell else 0 for s in sizes]
        ax.bar(x - 0.4 + width * (i + 0.5), med, width, yerr=sd, capsize=2, label=b)
        ratio = [
            cell[(b, s)].get("ratio_to_serial") or np.nan if (b, s) in cell else np.nan
            for s in sizes
        ]
        ax2.plot(x, ratio, marker="o", label=b)
    ax.axhline(roofline, color="k", linestyle="--", linewidth=1, label="memcpy roofline")
    ax.set_ylabel("GB/s (median ± stdev)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    ax2.axhline(1.0, color="k", linewidth=0.8)
    ax2.set_ylabel("speedup vs cpu-serial")
    ax2.set_xticks(x, [format_size(s) for s in sizes])
    ax2.set_xlabel("folio size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
