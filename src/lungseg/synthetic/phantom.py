"""One synthetic patient: :func:`make_phantom` and the :class:`Patient` it is built on.

The build order is fixed (see :meth:`Patient.build`): every step draws from the one random
generator, so changing the order, or adding a draw anywhere, changes every later number and
therefore the whole cohort. The checksum test (``tests/unit/synthetic/test_synthetic_checksum.py``) guards it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lungseg.io.geometry import Geometry
from lungseg.synthetic.anatomy import sample_anatomy
from lungseg.synthetic.body import cavity_fields, paint_abdomen, paint_body
from lungseg.synthetic.labels import BLOOD, CALC, CORD, ESOPH, GAS, IS_LUNG_CONTENT, MYOCARD, TISSUE_HU, lut
from lungseg.synthetic.lungs import cut_lungs, grow_trees, paint_bronchi
from lungseg.synthetic.mediastinum import paint_mediastinum, place_mediastinum
from lungseg.synthetic.pathology import add_pathology, draw_kinds
from lungseg.synthetic.scanner import sample_scanner, to_hu
from lungseg.synthetic.shapes import tube
from lungseg.synthetic.skeleton import paint_chest_bones, rib_paths, spine

MASK_NAMES = ("Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord")


@dataclass
class Phantom:
    """One synthetic patient.

    Attributes:
        hu: float32 Hounsfield units ``[i, j, k]`` (integers stored as float, blur and
            noise applied, clipped to [-1024, 3071]).
        geometry: The CT grid (HFS, identity direction).
        masks: Ground-truth boolean masks ``[i, j, k]`` named as in :data:`MASK_NAMES`.
        info: Pathologies and scanner settings (no identifiers).
    """

    hu: np.ndarray
    geometry: Geometry
    masks: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


class Patient:
    """A patient under construction: drawn parameters plus the label volume being painted.

    Each part of the body lives in its own module as functions of the patient, which read and
    set attributes here. All coordinates are in the patient frame (mm): x = left, y = posterior
    (0 at the vertebral-body centre), z = superior (0 near the lowest lung point); arrays are
    indexed ``[i, j, k]`` on the grid ``g``.

    Set at construction: ``r`` (the generator), ``pathology``, ``max_matrix``, the body plan
    (:mod:`.anatomy`), ``kinds`` (:func:`.pathology.draw_kinds`), the acquisition
    (:mod:`.scanner`: ``g``, ``geometry``, ``world_off``, ``scanner``), the label volume ``lab``
    (uint8), the lung-free envelope ``medi`` (bool), and the lists that :func:`.scanner.to_hu`
    reads: ``overlays``, ``vessel_deposits``; ``landmarks``; ``hu_of`` (label -> this patient's HU).
    Set while building, in :meth:`build` order: ``side``, ``cavity``, ``zd``, ``above``
    (:func:`.body.cavity_fields`); ``z_notch``, ``z_xiph``, ``rib`` (:func:`.skeleton.rib_paths`);
    the mediastinal geometry (:func:`.mediastinum.place_mediastinum`); ``lung``
    (:func:`.lungs.cut_lungs`); ``heart_mask``, ``esoph_mask``; ``bronchi``; ``fiss``, ``stats``.
    """

    def __init__(self, rng: np.random.Generator, pathology: bool, max_matrix: int) -> None:
        if max_matrix < 32:
            raise ValueError(f"max_matrix must be >= 32, got {max_matrix}")
        self.r = rng
        self.pathology = pathology
        self.max_matrix = int(max_matrix)
        sample_anatomy(self)
        self.kinds = draw_kinds(rng) if pathology else []
        sample_scanner(self)
        g = self.g
        self.lab = np.zeros(g.shape, dtype=np.uint8)
        self.medi = np.zeros(g.shape, dtype=bool)
        self.overlays: list[tuple[tuple[slice, slice, slice], np.ndarray, float, np.ndarray]] = []
        self.vessel_deposits: list[tuple[np.ndarray, np.ndarray]] = []
        self.landmarks: dict[str, list[np.ndarray]] = {"tumour": [], "dense": []}
        self.hu_of = {lab: float(m + rng.normal(0, sd)) for lab, (m, sd) in TISSUE_HU.items()}

    # ------------------------------------------------------------------ painting primitives
    def paint(self, sl, inside, label: int, allow: np.ndarray | None = None) -> None:
        """Set ``lab[sl]`` to ``label`` where ``inside`` (with ``allow``: only where the old label is allowed)."""
        if sl is None:
            return
        view = self.lab[sl]
        m = inside if allow is None else inside & allow[view]
        view[m] = label

    def paint_path(self, pts, rad, label: int | None, allow: np.ndarray | None = None,
                   margin: float | None = None, zscale: float = 1.0) -> None:  # fmt: skip
        """Paint a tube along ``pts`` and/or add it (radius + margin) to the mediastinal envelope."""
        for a in range(len(pts) - 1):
            if label is not None:
                sl, m = tube(self.g, pts[a], pts[a + 1], rad[a], rad[a + 1], zscale)
                self.paint(sl, m, label, allow)
            if margin is not None:
                sl, m = tube(self.g, pts[a], pts[a + 1], rad[a] + margin, rad[a + 1] + margin, zscale)
                if sl is not None:
                    self.medi[sl] |= m

    # ------------------------------------------------------------------ landmark curves
    def y_vb(self, z: np.ndarray) -> np.ndarray:
        """Vertebral-body centre y at heights ``z`` (kyphosis: bowed back at mid-height)."""
        return self.kyph * (1 - ((np.asarray(z) - 0.5 * self.H) / (0.7 * self.H)) ** 2)

    def x_sp(self, z: np.ndarray) -> np.ndarray:
        """Spine centre x at heights ``z`` (scoliosis)."""
        return self.scol * np.sin(np.asarray(z) / self.H * np.pi)

    def y_st(self, z: np.ndarray) -> np.ndarray:
        """Sternum centre y at heights ``z`` (just in front of the cavity)."""
        c = self.th.at(np.asarray(z, dtype=float))
        return c["cy"] - c["aya"] - self.st_t / 2 - 2.0

    def lung_bbox(self, s: int) -> tuple[slice, slice, slice]:
        """Index box of lung ``s`` (-1 right, +1 left)."""
        m = self.lung[s]
        sl = []
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            idx = np.flatnonzero(m.any(axis=other))
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(sl)  # type: ignore[return-value]

    # ------------------------------------------------------------------ assembly
    def build(self) -> Phantom:
        """Paint every structure in a fixed order, then make the CT, masks and info."""
        cavity_fields(self)
        paint_body(self)
        spine(self, paint=False)
        rib_paths(self)
        place_mediastinum(self)
        paint_abdomen(self)
        cut_lungs(self)
        spine(self, paint=True)
        paint_mediastinum(self)
        self.bronchi: list = []
        grow_trees(self)
        paint_bronchi(self)
        kinds = add_pathology(self)
        paint_chest_bones(self)
        del self.medi, self.cavity, self.above
        hu = to_hu(self)
        masks = self.masks()
        info = {
            "pathology": bool(self.pathology), "pathologies": kinds,
            "parenchyma_hu": round(self.lung_hu, 1),
            "lung_r_ml": round(float(masks["Lung_R"].sum()) * self.geometry.voxel_volume_ml, 1),
            "lung_l_ml": round(float(masks["Lung_L"].sum()) * self.geometry.voxel_volume_ml, 1),
            **{k: round(v, 1) for k, v in self.stats.items()},
            "landmarks_lps_mm": self.landmarks_world(),
            **self.scanner,
        }  # fmt: skip
        return Phantom(hu=hu, geometry=self.geometry, masks=masks, info=info)

    def landmarks_world(self) -> dict[str, list[list[float]]]:
        """Carina, a mid-trachea point, tumour centres and fully dense lung points in world LPS mm."""
        P, _ = self.airways[0]
        z_mid = 0.5 * (self.z_c + float(self.g.z[-1]))
        pts = {
            "carina": [self.trachea["c"]],
            "trachea": [P[int(np.argmin(np.abs(P[:, 2] - z_mid)))]],
            "tumour": self.landmarks["tumour"],
            "dense": self.landmarks["dense"],
        }
        return {k: [[round(float(v), 2) for v in np.asarray(p) + self.world_off] for p in ps] for k, ps in pts.items()}

    def masks(self) -> dict[str, np.ndarray]:
        """The RTSTRUCT ground truth, bool ``[i, j, k]`` named as in :data:`MASK_NAMES`."""
        lab = self.lab
        content = IS_LUNG_CONTENT[lab]
        cord = lab == CORD
        return {
            "Lung_R": self.lung[-1] & content,
            "Lung_L": self.lung[1] & content,
            "Heart": self.heart_mask & lut((MYOCARD, BLOOD, CALC))[lab],
            "Esophagus": self.esoph_mask & lut((ESOPH, GAS))[lab],
            "SpinalCord": cord,
        }


def make_phantom(rng: np.random.Generator, pathology: bool, *, max_matrix: int = 512) -> Phantom:
    """Draw one synthetic chest CT with ground-truth masks.

    Args:
        rng: Source of all randomness (the same generator state gives the same phantom).
        pathology: Whether to add lung pathology (tumour, atelectasis, consolidation,
            effusion, ground glass, emphysema; one or more).
        max_matrix: Largest in-plane matrix; a smaller cap keeps the field of view and
            enlarges the pixels.

    Returns:
        A :class:`Phantom` whose arrays are indexed ``[i, j, k]`` on an HFS axial grid.
    """
    return Patient(rng, pathology, max_matrix).build()
