"""One small synthetic patient shared by the unit tests (built once per process)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lungseg.io.geometry import Geometry
from lungseg.synthetic import make_phantom


@lru_cache(maxsize=2)
def small_patient(max_matrix: int = 96) -> tuple[np.ndarray, Geometry, np.ndarray]:
    """``(hu, geometry, labels)`` of patient ``[5, 1]`` without pathology; labels 1 right, 2 left lung.
    Cached, so the arrays are read-only."""
    ph = make_phantom(np.random.default_rng([5, 1]), False, max_matrix=max_matrix)
    labels = np.zeros(ph.hu.shape, np.uint8)
    labels[ph.masks["Lung_R"]] = 1
    labels[ph.masks["Lung_L"]] = 2
    for a in (ph.hu, labels):
        a.setflags(write=False)
    return ph.hu, ph.geometry, labels
