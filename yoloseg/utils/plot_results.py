"""results.png from a run's results.csv, drawn with OpenCV (no plotting library needed)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np

PANEL_W, PANEL_H = 320, 240
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 52, 12, 28, 26
LINE = (200, 110, 30)  # BGR: blue-ish raw values
SMOOTH = (40, 140, 255)  # orange smoothed curve
FONT = cv2.FONT_HERSHEY_SIMPLEX


def read_results_csv(path: str | Path) -> dict[str, list[float]]:
    """Columns of a results.csv as float lists (blank or unparsable cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    cols: dict[str, list[float]] = {h: [] for h in header}
    for row in rows[1:]:
        for h, cell in zip(header, row + [""] * (len(header) - len(row))):
            try:
                cols[h].append(float(cell))
            except ValueError:
                cols[h].append(float("nan"))
    return cols


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v:.3g}"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.1e}"


def _smooth(y: np.ndarray) -> np.ndarray:
    """Centered moving average over about 1/8 of the points (at least 1)."""
    n = len(y)
    k = max(1, (n // 8) | 1)
    if k == 1 or n < 3:
        return y
    pad = k // 2
    yp = np.pad(y, pad, mode="edge")
    return np.convolve(yp, np.ones(k) / k, mode="valid")


def _panel(title: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    cv2.putText(img, title[:38], (8, 18), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    x0, x1, y0, y1 = MARGIN_L, PANEL_W - MARGIN_R, MARGIN_T, PANEL_H - MARGIN_B
    cv2.rectangle(img, (x0, y0), (x1, y1), (160, 160, 160), 1)
    ok = np.isfinite(y)
    if not ok.any():
        cv2.putText(img, "no data", (x0 + 10, (y0 + y1) // 2), FONT, 0.4, (120, 120, 120), 1, cv2.LINE_AA)
        return img
    x, y = x[ok], y[ok]
    lo, hi = float(y.min()), float(y.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) + 1e-3), hi + 0.5 * (abs(hi) + 1e-3)
    xl, xh = float(x.min()), float(x.max())
    if xh - xl < 1e-12:
        xl, xh = xl - 1, xh + 1

    def to_px(xs, ys):
        px = x0 + (xs - xl) / (xh - xl) * (x1 - x0)
        py = y1 - (ys - lo) / (hi - lo) * (y1 - y0)
        return np.stack([px, py], 1).round().astype(np.int32)

    for frac in (0.25, 0.5, 0.75):  # light grid
        gy = int(round(y1 - frac * (y1 - y0)))
        cv2.line(img, (x0 + 1, gy), (x1 - 1, gy), (235, 235, 235), 1)
    for v, py in ((hi, y0), (lo, y1)):
        cv2.putText(img, _fmt(v), (2, py + 4), FONT, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    for v, px in ((xl, x0), (xh, x1)):
        label = f"{v:g}"
        cv2.putText(img, label, (px - 4 * len(label), y1 + 14), FONT, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    pts = to_px(x, y)
    cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, LINE, 1, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, tuple(int(c) for c in p), 2, LINE, -1, cv2.LINE_AA)
    if len(y) >= 5:
        cv2.polylines(img, [to_px(x, _smooth(y)).reshape(-1, 1, 2)], False, SMOOTH, 1, cv2.LINE_AA)
    return img


def plot_results(csv_path: str | Path, out: str | Path | None = None, columns: list[str] | None = None) -> Path:
    """Draw one small chart per metric column of `csv_path` (x = epoch) and write a PNG (default
    results.png next to the CSV). Returns the PNG path."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"results csv not found: {csv_path}")
    cols = read_results_csv(csv_path)
    out = Path(out) if out else csv_path.with_name("results.png")
    if "epoch" in cols:
        x = np.asarray(cols["epoch"], float)
    else:
        x = np.arange(1, len(next(iter(cols.values()), [])) + 1, dtype=float)
    names = columns or [c for c in cols if c not in ("epoch", "time") and not c.startswith("lr/")
                        and any(math.isfinite(v) for v in cols[c])]  # columns never filled are left out
    panels = [_panel(n, x, np.asarray(cols[n], float)) for n in names if n in cols] or [_panel("empty", x, x * np.nan)]
    ncol = min(5, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    canvas = np.full((nrow * PANEL_H, ncol * PANEL_W, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, ncol)
        canvas[r * PANEL_H:(r + 1) * PANEL_H, c * PANEL_W:(c + 1) * PANEL_W] = p
    ok, buf = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"could not encode {out}")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(out)
    return out
