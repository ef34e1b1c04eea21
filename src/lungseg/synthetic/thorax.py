"""The pleural cavity (both hemithoraces) as smooth functions of height.

Patient frame (mm): x = left, y = posterior (0 at the vertebral-body centre), z = superior
(0 near the lowest lung point, ``H`` at the apex).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from lungseg.synthetic.shapes import Range


@dataclass(frozen=True)
class ThoraxRanges:
    """Per-patient uniform ranges of the cavity shape (mm unless noted)."""

    apex_radius: Range = (22, 30)  # radius of each apical dome
    apex_x: Range = (40, 52)  # lateral distance of a dome centre from the midline
    apex_y: Range = (-8, 8)  # y of the dome centres
    left_half_width: Range = (108, 135)  # midline to the lateral wall of the left cavity at the base
    right_to_left_width: Range = (1.01, 1.06)  # ratio: the right hemithorax is larger
    base_centre_x: Range = (4, 14)  # lateral distance of a side's centre from the midline at the base
    posterior_wall_y: Range = (14, 26)  # y of the posterior cavity wall (behind the vertebral body centre)
    posterior_semi_axis: Range = (60, 78)  # centre to posterior wall at the base
    anterior_semi_axis: Range = (82, 108)  # centre to anterior wall at the base
    base_exponent: Range = (2.0, 2.4)  # superellipse exponent at the base (2 = ellipse, larger = boxier)
    knot_jitter_sd: float = 0.025  # relative SD of the semi-axes at each height knot


THORAX = ThoraxRanges()


class Thorax:
    """The pleural cavity as smooth functions of height.

    Each side ``s`` (-1 right, +1 left) is a superellipse cross-section centred at
    ``(s * xs(z), cy(z))`` with lateral semi-axis ``ax_s(z)`` and anterior/posterior
    semi-axes ``aya(z)`` / ``ayp(z)``; near the apex both sides become round domes.

    Attributes (mm): ``H`` lung height; ``rho``, ``xa``, ``ya`` apical dome radius and centre;
    ``zd0`` height where the domes start; ``E[s]`` midline to lateral wall of side ``s`` at the
    base; ``y_post`` posterior wall; ``ayp0``, ``aya0`` posterior/anterior semi-axes at the base;
    ``cy0`` centre y at the base.
    """

    def __init__(self, r: np.random.Generator, H: float) -> None:
        T = THORAX
        self.H = H
        self.rho = r.uniform(*T.apex_radius)
        self.xa = r.uniform(*T.apex_x)
        self.ya = r.uniform(*T.apex_y)
        self.zd0 = H - self.rho
        self.E = {1: r.uniform(*T.left_half_width)}
        self.E[-1] = self.E[1] * r.uniform(*T.right_to_left_width)  # right hemithorax larger
        xs0 = r.uniform(*T.base_centre_x)
        self.y_post = r.uniform(*T.posterior_wall_y)
        self.ayp0 = r.uniform(*T.posterior_semi_axis)
        self.aya0 = r.uniform(*T.anterior_semi_axis)
        self.cy0 = self.y_post - self.ayp0
        p0 = r.uniform(*T.base_exponent)
        u = [0.0, 0.3, 0.6, 0.85, 1.0]  # knot heights as fractions of the dome start zd0
        rho, xa, ya, cy0 = self.rho, self.xa, self.ya, self.cy0

        def jit() -> np.ndarray:
            return np.r_[1 + r.normal(0, T.knot_jitter_sd, 4), 1.0]

        # knot values base -> apex: the cross-section narrows and rounds off towards the domes
        knots = {
            "xs": [xs0, xs0, xs0 + 0.1 * (xa - xs0), xs0 + 0.5 * (xa - xs0), xa],
            "cy": [cy0, cy0, cy0 + 0.15 * (ya - cy0), cy0 + 0.55 * (ya - cy0), ya],
            "p": [p0, p0, p0, (p0 + 2) / 2, 2.0],
        }
        for s in (-1, 1):
            ax0 = self.E[s] - xs0
            knots[f"ax{s}"] = list(ax0 * np.array([1.0, 0.97, 0.86, 0.62, rho / ax0]) * jit())
        knots["aya"] = list(self.aya0 * np.array([0.95, 1.0, 0.9, 0.62, rho / self.aya0]) * jit())
        knots["ayp"] = list(self.ayp0 * np.array([1.0, 1.0, 0.93, 0.72, rho / self.ayp0]) * jit())
        self._f = {k: PchipInterpolator(u, v) for k, v in knots.items()}

    def at(self, z: np.ndarray) -> dict[str, np.ndarray]:
        """Cross-section parameters at heights ``z`` (mm); empty (zero axes) above the apex."""
        z = np.atleast_1d(np.asarray(z, dtype=float))
        u = np.clip(z / self.zd0, 0.0, 1.0)
        out = {k: np.asarray(f(u), dtype=float) for k, f in self._f.items()}
        dome = z > self.zd0
        if dome.any():
            rad = self.rho * np.sqrt(np.clip(1 - ((z[dome] - self.zd0) / self.rho) ** 2, 0, 1))
            for k in ("ax-1", "ax1", "aya", "ayp"):
                out[k][dome] = rad
            out["xs"][dome], out["cy"][dome], out["p"][dome] = self.xa, self.ya, 2.0
        return out

    def radius(self, z: np.ndarray, alpha: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boundary point of side ``s`` at angle ``alpha`` (0 posterior, pi/2 lateral, pi anterior).

        Returns ``(x, y, r)`` with r the distance from the side centre.
        """
        c = self.at(z)
        dx, dy = np.abs(np.sin(alpha)), np.cos(alpha)
        ay = np.where(dy > 0, c["ayp"], c["aya"])
        p = c["p"]
        with np.errstate(divide="ignore"):
            r = ((dx / np.maximum(c[f"ax{s}"], 1e-3)) ** p + (np.abs(dy) / np.maximum(ay, 1e-3)) ** p) ** (-1 / p)
        return s * (c["xs"] + r * dx), c["cy"] + r * dy, r
