"""The report's figures, drawn with matplotlib (Agg, no display) and embedded as SVG data URIs.

SVG keeps text as text (``svg.fonttype: none``) and a histogram as two filled paths, so a figure is
a few kilobytes whatever the number of rows; only the dataset card's headline plot is also a PNG.
"""

from __future__ import annotations

import base64
import io

import numpy as np

KEPT, DROPPED, BOUND, BAND = "#3b75af", "#d1495b", "#222222", "#7b4ea3"
STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "litho",
    "font.size": 8,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 9,
    "figure.dpi": 100,
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def svg_uri(fig) -> str:
    """The figure as an SVG data URI; cropped to its contents unless it has fixed margins (a
    ``litho_fixed`` attribute: cropping draws the figure twice, and histograms are most figures)."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="svg",
        bbox_inches=None if getattr(fig, "litho_fixed", False) else "tight",
        metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
    )
    _pyplot().close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def png_bytes(fig, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def funnel(steps: list[dict]):
    """Rows left after every step; a drop step shows what it removed in red beside what is left."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(steps) + 0.8))
    y = np.arange(len(steps))[::-1]
    top = max(max(s["left"], s["rows"]) for s in steps) or 1
    for yi, step in zip(y, steps):
        color = DROPPED if step["kind"] == "drop" else KEPT
        if step["kind"] == "drop":
            ax.barh(yi, step["left"], color="#c9d6e5")
            ax.barh(yi, step["rows"], left=step["left"], color=color)
            ax.text(
                step["left"] + step["rows"] + top * 0.01, yi, f"−{step['rows']:,}", va="center", fontsize=7
            )
        else:
            ax.barh(yi, step["rows"], color=color)
            ax.text(step["rows"] + top * 0.01, yi, f"{step['rows']:,}", va="center", fontsize=7)
    ax.set_yticks(y, [s["label"] for s in steps])
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("rows")
    ax.set_title("rows through the pipeline (red: dropped at this step)")
    return fig


def histogram(column: str, kept: np.ndarray, dropped: np.ndarray, lines: list[dict], bins: int = 40):
    """Kept and dropped rows of one score on shared bins; bounds as lines, a quantile band shaded.

    The x range is the 0.5-99.5 percentile of the values widened to every bound; values outside it
    are counted in the edge bins.
    """
    plt = _pyplot()
    kept, dropped = kept[np.isfinite(kept)], dropped[np.isfinite(dropped)]
    both = np.concatenate([kept, dropped])
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
    marks = [line["value"] for line in lines]
    lo, hi = min([lo, *marks]), max([hi, *marks])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig, ax = plt.subplots(figsize=(4.6, 2.5))
    for values, color, label in ((kept, KEPT, "kept"), (dropped, DROPPED, "dropped")):
        if values.size:
            # Counted by numpy and drawn as one step patch each (ax.stairs): ax.hist builds a polygon
            # per call and walks its vertices in Python, most of a small report's drawing time.
            counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
            ax.stairs(counts, edges, fill=True, color=color, alpha=0.45, label=f"{label} ({values.size:,})")
            ax.stairs(counts, edges, color=color, linewidth=1)
    band = {line["side"]: line["value"] for line in lines if line["side"].startswith("band_")}
    if len(band) == 2:
        ax.axvspan(band["band_min"], band["band_max"], color=BAND, alpha=0.08, label="quantile band")
    for line in lines:
        is_band = line["side"].startswith("band_")
        ax.axvline(
            line["value"], color=BAND if is_band else BOUND, linestyle=":" if is_band else "--", linewidth=1
        )
        ax.annotate(
            line["label"],
            (line["value"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=6,
            color=BAND if is_band else BOUND,
        )
    ax.set_title(column)
    ax.set_ylabel("rows")
    ax.legend(fontsize=6, loc="upper right", framealpha=0.7, edgecolor="none")  # "best" scans every vertex
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.9)
    fig.litho_fixed = True
    return fig


def heatmap(names: list[str], matrix: np.ndarray):
    plt = _pyplot()
    size = 1.2 + 0.42 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(np.nan_to_num(matrix), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 16:
        for i in range(len(names)):
            for j in range(len(names)):
                value = matrix[i, j]
                text = "" if not np.isfinite(value) else f"{value:.2f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(value) > 0.6 else "black",
                )
    fig.colorbar(image, ax=ax, shrink=0.7, label="Spearman ρ")
    ax.set_title("rank correlation between scores (kept rows)")
    return fig


SEGMENTS = 400  # most segments drawn per worker; a longer run's batches are merged into this many


def _merged(batches: list[dict], most: int = SEGMENTS) -> list[dict]:
    """``batches`` (one worker's, by start) merged into at most ``most`` runs of consecutive batches, each
    from its first start to its last end at its tokens over its summed batch seconds (a 1M-row run has
    tens of thousands of batches: one line each made the SVG megabytes and the driver hundreds of MB)."""
    if len(batches) <= most:
        return batches
    out = []
    for chunk in np.array_split(np.arange(len(batches)), most):
        part = [batches[i] for i in chunk]
        out.append(
            {
                "t0": part[0]["t0"],
                "t1": max(b["t1"] for b in part),
                "tokens": sum(b["tokens"] for b in part),
                "seconds": sum(b["seconds"] or 0.0 for b in part),
            }
        )
    return out


def throughput(batches: list[dict]):
    """Each batch as a segment from its start to its end at its tokens/s (one colour per worker; past
    :data:`SEGMENTS` batches a worker's consecutive batches are merged), and the tokens finished so far."""
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    fig, (rate, total) = plt.subplots(2, 1, figsize=(7.5, 4.0), sharex=True)
    minutes = max(b["t1"] for b in batches) > 300
    scale, unit = (60.0, "min") if minutes else (1.0, "s")
    workers = sorted({b["worker"] for b in batches})
    colors = plt.get_cmap("tab10")
    top = 0.0
    for k, worker in enumerate(workers):
        mine = _merged(sorted((b for b in batches if b["worker"] == worker), key=lambda b: b["t0"]))
        speeds = [b["tokens"] / b["seconds"] if b["seconds"] else 0.0 for b in mine]
        segments = [[(b["t0"] / scale, v), (b["t1"] / scale, v)] for b, v in zip(mine, speeds)]
        rate.add_collection(LineCollection(segments, colors=[colors(k % 10)], linewidths=2.5, label=worker))
        top = max(top, *speeds)
    rate.set_xlim(0, max(b["t1"] for b in batches) / scale or 1.0)
    rate.set_ylim(0, top * 1.05 or 1.0)
    rate.set_ylabel("tokens/s per batch")
    rate.legend(
        fontsize=6, loc="lower left", framealpha=0.7, edgecolor="none", title="worker", title_fontsize=6
    )
    ends = sorted(batches, key=lambda b: b["t1"])
    t = np.array([0.0] + [b["t1"] / scale for b in ends])
    done = np.cumsum([0] + [b["tokens"] for b in ends])
    if (
        len(t) > 4 * SEGMENTS
    ):  # every k-th point and the last: the curve, without tens of thousands of vertices
        keep = np.unique(np.r_[np.linspace(0, len(t) - 1, 4 * SEGMENTS).astype(int), len(t) - 1])
        t, done = t[keep], done[keep]
    total.step(t, done, where="post", color=KEPT)
    total.set_ylabel("tokens generated")
    total.set_xlabel(f"time since the first batch started ({unit})")
    rate.set_title("teacher throughput")
    return fig


def timings(wall: list[tuple[str, float]], stages: list[dict]):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 0.3 * max(len(wall), len(stages)) + 1.2))
    left.barh([w[0] for w in wall][::-1], [w[1] for w in wall][::-1], color=KEPT)
    left.set_xlabel("wall-clock seconds")
    left.set_title("phases")
    right.barh([s["name"] for s in stages][::-1], [s["seconds"] for s in stages][::-1], color="#6a9f58")
    right.set_xlabel("seconds (summed over workers)")
    right.set_title("stages")
    fig.tight_layout()
    return fig


def cluster_sizes(sizes: dict[int, int], title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(1.5 + 0.4 * len(sizes), 7.0), 2.2))
    ax.bar(range(len(sizes)), list(sizes.values()), color=KEPT, width=0.6)
    ax.set_xticks(range(len(sizes)), [str(k) for k in sizes])
    ax.set_xlabel("cluster size (rows)")
    ax.set_ylabel("clusters")
    ax.set_title(title)
    return fig
