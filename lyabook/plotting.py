"""The book's one plotting style (and its tables' display options).

Figures are drawn for the book's text column (about 790 px wide at a 1400 px window):
`WIDTH_IN` inches at `DPI` dots per inch, so a figure is shown at its own size and a 9 pt
label stays about 15 px high. At most three panels share a row (`panels`); every axis says
what it shows and in which unit (`EXPONENT_LABEL`), continuous colourings get a colour bar
(`colorbar`), and a figure's caption names the dissertation's figure it reproduces
(`caption`).
"""
from __future__ import annotations

import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["WIDTH_IN", "DPI", "use_book_style", "panels", "caption", "colorbar", "plot_spectrum",
           "exponent_label", "EXPONENT_LABEL", "INDEX_LABEL", "hover_scatter"]

WIDTH_IN = 6.0       # inches: 6.0 x 130 dpi = 780 px, the text column's width
DPI = 130
PANEL_HEIGHT_IN = 2.1
MAX_COLUMNS = 3

INDEX_LABEL = "index $i$"


def exponent_label(unit: str = "step", symbol: str = r"\lambda_i") -> str:
    """Axis label of an exponent: ``$\\lambda_i$ (per step)`` or ``(per unit time)``."""
    if unit not in ("step", "unit time"):
        raise ValueError(f"unit must be 'step' or 'unit time', got {unit!r}")
    return f"${symbol}$ (per {unit})"


EXPONENT_LABEL = exponent_label("step")

_STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (WIDTH_IN, 2.4),
    "figure.constrained_layout.use": True,
    "font.size": 8.5,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.0,
    "axes.prop_cycle": mpl.cycler(color=plt.get_cmap("tab10").colors),
}


# tables show whole cells: a claim or a criterion cut to 50 characters ("...") says nothing
_PANDAS = {"display.max_colwidth": None, "display.width": 100}


def use_book_style() -> None:
    """Set the book's style: matplotlib sizes for the text column and mathtext labels, and
    pandas tables that show every cell in full (HTML tables wrap their text)."""
    mpl.rcParams.update(_STYLE)
    try:
        import pandas as pd
    except ImportError:  # pandas is a core dependency; keep plotting usable without it
        return
    for key, value in _PANDAS.items():
        pd.set_option(key, value)


def panels(n: int, *, ncols: int | None = None, height: float = PANEL_HEIGHT_IN, sharey: bool = False,
           projection: str | None = None, width: float = WIDTH_IN):
    """A figure with ``n`` panels, at most three per row, the text column's width.

    Returns (fig, axes) with ``axes`` a flat list of the ``n`` axes (surplus grid cells removed).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ncols = min(n, MAX_COLUMNS) if ncols is None else ncols
    if not 1 <= ncols <= MAX_COLUMNS:
        raise ValueError(f"ncols must lie in 1..{MAX_COLUMNS} (the book's width), got {ncols}")
    nrows = math.ceil(n / ncols)
    fig = plt.figure(figsize=(width, height * nrows))
    axes, first = [], None
    for i in range(n):
        kw = {"projection": projection} if projection else {}
        if sharey and first is not None:
            kw["sharey"] = first
        ax = fig.add_subplot(nrows, ncols, i + 1, **kw)
        first = first or ax
        axes.append(ax)
    return fig, axes


def caption(fig, text: str) -> None:
    """Title a figure with the dissertation's figure number and what it shows."""
    fig.suptitle(text, fontsize=9)


def colorbar(fig, ax, values, *, cmap: str = "viridis", label: str):
    """A colour bar for a continuous colouring by ``values``; returns (colour of each value, bar)."""
    values = np.asarray(values, dtype=float)
    norm = mpl.colors.Normalize(vmin=float(values.min()), vmax=float(values.max()))
    mapper = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(mapper, ax=ax, pad=0.02)
    bar.set_label(label)
    return mapper.to_rgba(values), bar


def plot_spectrum(ax, exponents, *, unit: str = "step", stderr=None, **kw):
    """Exponents against their index 1..k (with error bars when ``stderr`` is given), labelled."""
    e = np.asarray(exponents, dtype=float)
    i = np.arange(1, e.shape[-1] + 1)
    if stderr is None:
        line = ax.plot(i, e, **kw)
    else:
        line = ax.errorbar(i, e, yerr=np.asarray(stderr, dtype=float), **kw)
    ax.set_xlabel(INDEX_LABEL)
    ax.set_ylabel(exponent_label(unit))
    return line


def hover_scatter(x, y, colors, labels, *, title: str = "", xlabel: str = "", ylabel: str = "",
                  legend: dict | None = None, width: int = 640, height: int = 440, radius: float = 2.5) -> str:
    """A scatter plot as an SVG in HTML whose points show their label when the pointer rests on
    them (each circle's SVG <title>): the HTML book's interactive figures, with no plotting
    library in the reader's browser and nothing fetched. ``x``, ``y``: (n,) finite numbers;
    ``colors``: n CSS colours (e.g. `matplotlib.colors.to_hex`); ``labels``: n strings (escaped
    here); ``legend``: {name: colour} shown under the plot. Returns the HTML; show it with
    ``IPython.display.HTML``."""
    from html import escape

    x, y = (np.asarray(v, dtype=float).ravel() for v in (x, y))
    n = len(x)
    for name, v in (("y", y), ("colors", colors), ("labels", labels)):
        if len(v) != n:
            raise ValueError(f"{name} must have one entry per point ({n}), got {len(v)}")
    if n == 0 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be non-empty and finite (drop the points without a value first)")
    left, right, top, bottom = 62, 12, 28, 44
    pw, ph = width - left - right, height - top - bottom

    def scale(v, size, flip):
        lo, hi = float(v.min()), float(v.max())
        pad = 0.04 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
        f = (v - lo) / (hi - lo)
        return (1 - f if flip else f) * size, (lo, hi)

    px, (x0, x1) = scale(x, pw, False)
    py, (y0, y1) = scale(y, ph, True)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="12">{escape(title)}</text>',
           f'<g transform="translate({left},{top})"><rect width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for k in range(5):  # ticks at 0, 1/4, ..., 1 of each axis
        f = k / 4
        out.append(f'<text x="{f * pw:.1f}" y="{ph + 14}" text-anchor="middle">{x0 + f * (x1 - x0):.3g}</text>')
        out.append(f'<text x="-4" y="{(1 - f) * ph + 4:.1f}" text-anchor="end">{y0 + f * (y1 - y0):.3g}</text>')
    out.append(f'<text x="{pw / 2:.0f}" y="{ph + 32}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(-46,{ph / 2:.0f}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
    for a, b, c, t in zip(px, py, colors, labels):
        out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{radius}" fill="{escape(str(c))}"><title>{escape(str(t))}</title></circle>')
    out.append("</g></svg>")
    keys = "".join(f'<span style="color:{escape(str(c))}">&#9679;</span>&nbsp;{escape(str(k))}&emsp;' for k, c in (legend or {}).items())
    return "<div>" + "".join(out) + (f'<div style="font-size:12px">{keys}</div>' if keys else "") + "</div>"
