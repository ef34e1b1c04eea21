"""Synthetic chest CT phantoms and the embedded LCTSC-style DICOM cohort.

:func:`make_phantom` draws one patient: a thorax with body habitus, chest
wall, ribs, spine, sternum, lungs with airway and vessel trees, mediastinum,
heart and great vessels, diaphragm with the upper abdominal organs, a scanner
table, optional pathology, and scanner settings (matrix, pixel spacing, slice
thickness, patient offset, blur and noise). Everything is evaluated directly on
the target grid, structure by structure inside bounding boxes, as a label
volume that is turned into Hounsfield units at the end.

Arrays follow the lungseg convention (:mod:`lungseg.io.geometry`): indexed
``[i, j, k]`` = ``[column, row, slice]``; the grid is a standard head-first
supine axial CT (direction = identity), so ``i`` runs to the patient's left
(+x LPS), ``j`` to posterior (+y) and ``k`` to superior (+z). Internally the
anatomy is built in a patient frame (mm): x = left, y = posterior (0 at the
vertebral-body centre), z = superior (0 near the lowest lung point).

Mask conventions follow RTOG 1106 / LCTSC: lungs include intrapulmonary vessels
and bronchi and any collapsed, consolidated, ground-glass or emphysematous
lung; they exclude the trachea, main bronchi, hilar structures, tumour (GTV)
and pleural effusion.

:func:`synthesize_cohort` writes a cohort as DICOM CT + RTSTRUCT in the TCIA
LCTSC folder layout plus a ``cohort.csv`` describing each patient.

Modules, in build order (each holds a frozen ``...Ranges`` dataclass naming the numbers it draws):

- :mod:`.phantom` -- :class:`Phantom`, :func:`make_phantom` and the ``Patient`` builder (the order)
- :mod:`.anatomy` -- the body plan drawn up front (heights, diaphragm, spine, body wall, lung HU)
- :mod:`.thorax` -- the pleural cavity as smooth functions of height
- :mod:`.scanner` -- acquisition (matrix, spacing, placement, noise) and labels -> HU
- :mod:`.body` -- cavity and diaphragm fields, body outline, table, breasts, upper abdomen
- :mod:`.skeleton` -- spine, ribs, sternum, clavicles, scapulae
- :mod:`.mediastinum` -- airways, oesophagus, heart, great vessels, hila, nodes
- :mod:`.lungs` -- lungs and their arterial, venous and bronchial trees
- :mod:`.pathology` -- tumour, collapse, atelectasis, effusion, consolidation, ground glass, emphysema
- :mod:`.labels`, :mod:`.shapes` -- tissue labels and HU; grid and shape primitives
- :mod:`.cohort` -- the DICOM cohort writer
"""

from lungseg.synthetic.cohort import PATIENT_PREFIX, has_pathology, synthesize_cohort, write_case
from lungseg.synthetic.phantom import MASK_NAMES, Phantom, make_phantom
from lungseg.synthetic.scanner import HU_MAX, HU_MIN

__all__ = [
    "HU_MAX",
    "HU_MIN",
    "MASK_NAMES",
    "PATIENT_PREFIX",
    "Phantom",
    "has_pathology",
    "make_phantom",
    "synthesize_cohort",
    "write_case",
]
