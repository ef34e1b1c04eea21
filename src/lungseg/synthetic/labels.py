"""Tissue labels of the phantom's label volume and the Hounsfield units they turn into.

The phantom is painted as a ``uint8`` label volume, one label per tissue; :mod:`.scanner`
maps labels to HU at the end. Each patient draws its own HU per tissue from
``TISSUE_HU[label] = (mean, between-patient SD)``.
"""

from __future__ import annotations

import numpy as np

(AIR, TABLE_SHELL, TABLE_FOAM, SKIN, FAT, MUSCLE, GLAND, MED_FAT, HILUM_FAT, LUNG, VESSEL, BRONCH_WALL,
 AIRWAY, MYOCARD, BLOOD, ESOPH, GAS, CORTEX, CANCELLOUS, CARTILAGE, DISC, CSF, CORD, LIVER, SPLEEN,
 KIDNEY, STOMACH, FLUID, EFFUSION, TUMOUR, NODE, CALC) = range(32)  # fmt: skip

#: label -> (mean HU, between-patient SD in HU). The dict order is the order the patient's
#: values are drawn in: keep it.
TISSUE_HU: dict[int, tuple[float, float]] = {
    AIR: (-1000, 2), TABLE_SHELL: (250, 80), TABLE_FOAM: (-930, 25), SKIN: (25, 10), FAT: (-100, 8),
    MUSCLE: (45, 6), GLAND: (-30, 25), MED_FAT: (-95, 8), HILUM_FAT: (-80, 10), LUNG: (-850, 0),
    VESSEL: (42, 5), BRONCH_WALL: (20, 15), AIRWAY: (-1000, 3), MYOCARD: (48, 5), BLOOD: (40, 4),
    ESOPH: (40, 6), GAS: (-1000, 3), CORTEX: (850, 120), CANCELLOUS: (230, 50), CARTILAGE: (120, 40),
    DISC: (85, 10), CSF: (12, 4), CORD: (32, 4), LIVER: (58, 7), SPLEEN: (47, 5), KIDNEY: (33, 5),
    STOMACH: (38, 5), FLUID: (15, 8), EFFUSION: (10, 5), TUMOUR: (35, 8), NODE: (38, 6), CALC: (450, 120),
}  # fmt: skip

#: What the lung masks hold (RTOG 1106: intrapulmonary vessels and bronchi belong to the lung).
LUNG_CONTENT = (LUNG, VESSEL, BRONCH_WALL, AIRWAY)


def lut(labels: tuple[int, ...] | list[int]) -> np.ndarray:
    """Boolean lookup table over all 256 labels, True for ``labels`` (``lut(...)[lab]`` tests membership)."""
    out = np.zeros(256, dtype=bool)
    out[list(labels)] = True
    return out


IS_LUNG_CONTENT = lut(LUNG_CONTENT)
IN_LUNG = lut((LUNG, HILUM_FAT))
