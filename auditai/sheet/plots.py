"""Plots of a spec-sheet, with matplotlib's Agg canvas (no pyplot, no global backend change).

- `curves_figure`: verified error and falsified fraction against ε for one unit test, the
  gap between them shaded (the bound's looseness: the true robust error lies inside), and
  the gate's threshold drawn.
- `image_strip`: images decoded along a latent direction from −ε to +ε for a few samples
  (paper Fig. 3), for any decoder producing N×C×H×W, so a reader sees what "pose ± ε" means.
- `counterexample_grid`: decoded counterexamples beside their originals.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from auditai.sheet.record import UnitTestSheet
from auditai.errors import SheetError


def figure_png(fig: Figure, dpi: int = 96) -> bytes:
    """The figure as PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def curves_figure(ut: UnitTestSheet) -> Figure:
    """Verified error and falsified fraction against ε, with the gate's threshold."""
    fig = Figure(figsize=(4.6, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    eps = [r.eps for r in ut.rows]
    ve = [r.verified_error for r in ut.rows]
    ff = [r.falsified_fraction for r in ut.rows]
    ax.fill_between(eps, ff, ve, color="tab:orange", alpha=0.15, label="unknown (bound gap)")
    ax.plot(eps, ve, "o-", color="tab:red", label="verified error")
    ax.plot(eps, ff, "s--", color="tab:blue", label="falsified")
    gated = [r for r in ut.rows if r.gated]
    if gated:
        ax.plot([r.eps for r in gated], [r.verified_error for r in gated], "o", mfc="none", mec="k", ms=10, label="gated ε")
    thr = next((r.threshold_error for r in ut.rows if r.threshold_error is not None), None)
    if thr is not None:
        ax.axhline(thr, color="k", ls=":", lw=1.2, label=f"threshold {thr:.3g}")
    ax.set_xlabel("ε")
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(_short(f"{ut.name}: {ut.set_description}"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _short(s: str, n: int = 60) -> str:
    s = "".join(c if c.isprintable() else "?" for c in s)
    return s if len(s) <= n else s[: n - 1] + "…"


def to_images(x: Any) -> np.ndarray:
    """N×C×H×W (or N×H×W) decoder output → N×H×W×3 floats in [0, 1].

    Values already in [0, 1] are kept, [−1, 1] is mapped to [0, 1], anything else is scaled
    by its overall min and max. One channel becomes grey; more than 3 keep the first 3.
    """
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise SheetError(f"a decoder must produce N×C×H×W images, got shape {a.shape}")
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo >= 0.0 and hi <= 1.0:
        pass
    elif lo >= -1.0 and hi <= 1.0:
        a = (a + 1.0) / 2.0
    else:
        a = (a - lo) / max(hi - lo, 1e-12)
    a = np.nan_to_num(a, nan=0.0)
    c = a.shape[1]
    if c == 1:
        a = np.repeat(a, 3, axis=1)
    elif c == 2:
        a = np.concatenate([a, a[:, :1]], axis=1)
    else:
        a = a[:, :3]
    return np.clip(a.transpose(0, 2, 3, 1), 0.0, 1.0)


def _decode(decoder: Any, z: np.ndarray) -> np.ndarray:
    import torch

    params = list(decoder.parameters()) if hasattr(decoder, "parameters") else []
    dev = params[0].device if params else torch.device("cpu")
    dt = params[0].dtype if params and params[0].is_floating_point() else torch.get_default_dtype()
    was_training = getattr(decoder, "training", False)
    switched = False
    if was_training and hasattr(decoder, "eval"):
        try:  # modules from torch.export cannot switch modes (and need not)
            decoder.eval()
            switched = True
        except NotImplementedError:
            pass
    try:
        with torch.no_grad():
            out = decoder(torch.as_tensor(z, dtype=dt, device=dev))
    finally:
        if switched:
            decoder.train()
    return to_images(out)


def strip_offsets(eps: Sequence[float]) -> list[float]:
    """Column offsets t: −ε … 0 … +ε for the given ε values (sorted, 0 included)."""
    vals = {0.0}
    for e in eps:
        vals.add(float(e))
        vals.add(-float(e))
    return sorted(vals)


def image_strip(decoder: Any, z0: Any, vector: Any, eps: Sequence[float]) -> tuple[np.ndarray, list[float]]:
    """Images decoded at z0 + t·v for t in −ε … +ε (paper Fig. 3), one batched decode.

    Args:
        decoder: callable (e.g. nn.Module) mapping M×d codes to M×C×H×W images.
        z0: n×d codes (a few samples), rows of the grid.
        vector: d, the direction moved along (used as given: normalise it first if wanted).
        eps: the ε values; columns are t ∈ strip_offsets(eps).
    Returns:
        (grid H'×W'×3 in [0, 1], offsets t of the columns).
    """
    z = np.asarray(z0.detach().cpu().numpy() if hasattr(z0, "detach") else z0, dtype=np.float64)
    if z.ndim == 1:
        z = z[None]
    v = np.asarray(vector.detach().cpu().numpy() if hasattr(vector, "detach") else vector, dtype=np.float64).reshape(-1)
    if z.ndim != 2 or v.shape[0] != z.shape[1]:
        raise SheetError(f"image_strip needs z0 n×d and a vector of d, got {z.shape} and {v.shape}")
    ts = strip_offsets(eps)
    n, m = z.shape[0], len(ts)
    codes = (z[:, None, :] + np.asarray(ts)[None, :, None] * v[None, None, :]).reshape(n * m, -1)
    imgs = _decode(decoder, codes)  # (n·m)×H×W×3
    return tile(imgs, n, m), ts


def tile(imgs: np.ndarray, rows: int, cols: int, pad: int | None = None) -> np.ndarray:
    """rows×cols images (row-major) into one grid with `pad` white pixels between them."""
    _, h, w, c = imgs.shape
    if pad is None:
        pad = max(1, min(h, w) // 16)
    grid = np.ones((rows * (h + pad) - pad, cols * (w + pad) - pad, c))
    for i in range(rows):
        for j in range(cols):
            grid[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = imgs[i * cols + j]
    return grid


def fit_labels(fig: Figure, ax: Any, gap_pt: float = 3.0, tries: int = 8) -> Figure:
    """Grow `fig` (width and height together, so the image grows with it) until its x tick
    labels do not overlap one another and they and the title lie inside the figure. Measured
    on the drawn text, so it holds for any font; fonts keep their size in points."""
    canvas = FigureCanvasAgg(fig)
    for _ in range(tries):
        canvas.draw()
        r = canvas.get_renderer()
        gap = gap_pt * fig.dpi / 72.0
        boxes = sorted((t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
        texts = [*boxes, ax.title.get_window_extent(r)] if ax.get_title() else boxes
        overlap = any(a.x1 + gap > b.x0 for a, b in itertools.pairwise(boxes))
        outside = any(b.x0 < 0 or b.x1 > fig.bbox.width for b in texts)
        if not (overlap or outside):
            break
        w, h = fig.get_size_inches()
        fig.set_size_inches(w * 1.25, h * 1.25)
    return fig


def strip_figure(grid: np.ndarray, offsets: Sequence[float], title: str, rows: int) -> Figure:
    """A strip grid with its column offsets as x labels."""
    w = grid.shape[1]
    cols = len(offsets)
    fig = Figure(figsize=(min(1.0 + 0.9 * cols, 12), 0.4 + 0.9 * rows))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([(j + 0.5) * w / cols for j in range(cols)])
    ax.set_xticklabels([f"{t:+g}" if t else "0" for t in offsets], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("t (offset along the set)", fontsize=8)
    ax.set_title(_short(title), fontsize=9)
    return fit_labels(fig, ax)


def counterexample_grid(decoder: Any, z0: Any, z: Any) -> np.ndarray:
    """Pairs (original z0_i, counterexample z_i) decoded side by side: n rows × 2 columns."""
    a = np.asarray(z0, dtype=np.float64)
    b = np.asarray(z, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise SheetError(f"counterexample_grid needs two n×d arrays of the same shape, got {a.shape} and {b.shape}")
    codes = np.stack([a, b], axis=1).reshape(2 * a.shape[0], -1)
    return tile(_decode(decoder, codes), a.shape[0], 2)


def image_figure(grid: np.ndarray, title: str, xlabels: Sequence[str] = ()) -> Figure:
    h, w = grid.shape[:2]
    fig = Figure(figsize=(max(2.0, 3.0 * w / max(h, 1)), 3.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    if xlabels:
        ax.set_xticks([(j + 0.5) * w / len(xlabels) for j in range(len(xlabels))])
        ax.set_xticklabels(list(xlabels), fontsize=8)
    else:
        ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(_short(title), fontsize=9)
    return fit_labels(fig, ax)
