"""The report's figures, embedded as SVG data URIs: matplotlib's (Agg, no display), and the score
histograms written as SVG directly (:func:`histogram`: one a score column, the most of a report).

SVG keeps text as text (``svg.fonttype: none``) and a histogram as two filled paths, so a figure is
a few kilobytes whatever the number of rows; only the dataset card's headline plot is also a PNG.
"""

from __future__ import annotations

import base64
import io
from xml.sax.saxutils import escape

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
    """The matplotlib figure as an SVG data URI, cropped to its contents."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="svg",
        bbox_inches="tight",
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


def histogram(column: str, kept: np.ndarray, dropped: np.ndarray, lines: list[dict], bins: int = 40) -> str:
    """Kept and dropped rows of one score on shared bins, bounds as lines, a quantile band shaded: an
    SVG data URI.

    The x range is the 0.5-99.5 percentile of the values widened to every bound; values outside it
    are counted in the edge bins.

    Written as SVG here rather than drawn with matplotlib: a report holds one histogram per score
    column (44 on the default run), and matplotlib spent ~90 ms on each laying out ticks and text (4.6
    of the default report's 6.1 s; most of a small run's report). These are two step paths, a few lines
    and labels, ~3 ms each (measured on 2 cores). Tick values come from matplotlib's MaxNLocator, as its own axes choose them.
    """
    from matplotlib.ticker import MaxNLocator

    kept, dropped = kept[np.isfinite(kept)], dropped[np.isfinite(dropped)]
    both = np.concatenate([kept, dropped])
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
    marks = [line["value"] for line in lines]
    lo, hi = float(min([lo, *marks])), float(max([hi, *marks]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = {
        name: np.histogram(np.clip(values, lo, hi), bins=edges)[0]
        for name, values in (("kept", kept), ("dropped", dropped))
        if values.size
    }
    top = max([int(c.max()) for c in counts.values()] + [1]) * 1.05
    svg = _Svg(460, 250, left=64, right=447, top=25, bottom=220, x=(lo, hi), y=(0.0, top))
    band = {line["side"]: line["value"] for line in lines if line["side"].startswith("band_")}
    if len(band) == 2:
        svg.band(band["band_min"], band["band_max"], BAND, 0.08)
    for name, color in (("kept", KEPT), ("dropped", DROPPED)):
        if name in counts:
            svg.stairs(counts[name], edges, color)
    xticks = [v for v in MaxNLocator(nbins=6).tick_values(lo, hi) if lo <= v <= hi]
    yticks = [v for v in MaxNLocator(nbins=5, integer=True).tick_values(0, top) if v <= top]
    svg.axes(xticks, yticks, title=column, ylabel="rows")
    for line in lines:
        is_band = line["side"].startswith("band_")
        svg.bound(line["value"], line["label"], BAND if is_band else BOUND, "1 2" if is_band else "4 2")
    svg.legend(
        [
            (f"{name} ({len(values):,})", color)
            for name, values, color in (("kept", kept, KEPT), ("dropped", dropped, DROPPED))
            if values.size
        ]
    )
    return svg.uri()


class _Svg:
    """A plot area in an SVG document: data coordinates ``x`` and ``y`` mapped onto the pixel box
    ``left..right`` by ``bottom..top``; text stays text (sans-serif, as the matplotlib figures)."""

    def __init__(self, width: int, height: int, *, left, right, top, bottom, x, y):
        self.width, self.height = width, height
        self.box = (left, right, top, bottom)
        self.x, self.y = x, y
        self.parts: list[str] = []

    def px(self, v: float) -> float:
        left, right, _, _ = self.box
        return left + (v - self.x[0]) / (self.x[1] - self.x[0]) * (right - left)

    def py(self, v: float) -> float:
        _, _, top, bottom = self.box
        return bottom - (v - self.y[0]) / (self.y[1] - self.y[0]) * (bottom - top)

    def text(self, x: float, y: float, label: str, size: int = 10, anchor: str = "middle", **attrs) -> None:
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{escape(label)}</text>'
        )

    def band(self, a: float, b: float, color: str, alpha: float) -> None:
        _, _, top, bottom = self.box
        x0, x1 = sorted((self.px(a), self.px(b)))
        self.parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{bottom - top}" '
            f'fill="{color}" fill-opacity="{alpha}"/>'
        )

    def stairs(self, counts: np.ndarray, edges: np.ndarray, color: str) -> None:
        """One step path over the bins, filled (as ``ax.stairs(fill=True)``) and outlined."""
        xs, base = [self.px(e) for e in edges], self.py(0)
        path = (
            f"M{xs[0]:.1f},{base:.1f}"
            + "".join(f"V{self.py(c):.1f}H{xs[i + 1]:.1f}" for i, c in enumerate(counts))
            + f"V{base:.1f}"
        )
        self.parts.append(f'<path d="{path}Z" fill="{color}" fill-opacity="0.45" stroke="none"/>')
        self.parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1"/>')

    def axes(self, xticks, yticks, title: str, ylabel: str) -> None:
        left, right, top, bottom = self.box
        self.parts.append(
            f'<path d="M{left},{top}V{bottom}H{right}" fill="none" stroke="#000" stroke-width="0.8"/>'
        )
        for v, label in zip(xticks, _tick_labels(xticks)):
            x = self.px(v)
            self.parts.append(f'<path d="M{x:.1f},{bottom}v3.5" stroke="#000" stroke-width="0.8"/>')
            self.text(x, bottom + 14, label)
        for v, label in zip(yticks, _tick_labels(yticks)):
            y = self.py(v)
            self.parts.append(f'<path d="M{left},{y:.1f}h-3.5" stroke="#000" stroke-width="0.8"/>')
            self.text(left - 6, y + 3.5, label, anchor="end")
        self.text((left + right) / 2, top - 8, title, size=12)
        self.text(14, (top + bottom) / 2, ylabel, transform=f"rotate(-90 14 {(top + bottom) / 2:.1f})")

    def bound(self, value: float, label: str, color: str, dash: str) -> None:
        _, _, top, bottom = self.box
        x = self.px(value)
        self.parts.append(
            f'<path d="M{x:.1f},{top}V{bottom}" stroke="{color}" stroke-width="1" stroke-dasharray="{dash}"/>'
        )
        self.text(
            x - 2,
            top + 2,
            label,
            size=8,
            anchor="end",
            fill=color,
            transform=f"rotate(-90 {x - 2:.1f} {top + 2})",
        )

    def legend(self, entries: list[tuple[str, str]]) -> None:
        _, right, top, _ = self.box
        x, y = right - 96, top + 4
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="94" height="{6 + 12 * len(entries)}" fill="#fff" fill-opacity="0.7"/>'
        )
        for i, (label, color) in enumerate(entries):
            row = y + 5 + 12 * i
            self.parts.append(
                f'<rect x="{x + 4}" y="{row}" width="14" height="7" fill="{color}" fill-opacity="0.45" '
                f'stroke="{color}" stroke-width="1"/>'
            )
            self.text(x + 22, row + 7, label, size=8, anchor="start")

    def uri(self) -> str:
        doc = (
            '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}" font-family="DejaVu Sans, sans-serif">'
            f'<rect width="{self.width}" height="{self.height}" fill="#fff"/>'
            + "".join(self.parts)
            + "</svg>"
        )
        return "data:image/svg+xml;base64," + base64.b64encode(doc.encode()).decode()


def _tick_labels(values) -> list[str]:
    """Tick values printed with as many decimals as their step needs (0, 0.25, 0.5 / 100, 200)."""
    values = list(values)
    if len(values) < 2:
        return [f"{v:g}" for v in values]
    step = min(abs(b - a) for a, b in zip(values, values[1:])) or 1.0
    decimals = max(0, -int(np.floor(np.log10(step) + 1e-9)))
    return [f"{v:,.{decimals}f}".replace("-", "−") if abs(v) >= 1e-12 else "0" for v in values]


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
