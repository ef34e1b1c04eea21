"""Typed configuration of the data stages (``data``, ``synthesize``, ``prepare`` sections).

Part of :mod:`lungseg.config` (which re-exports every name here and does the strict loading).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class DataConfig:
    """Where each stage reads and writes (paths relative to the repo root)."""

    raw_dir: str = "data/raw/synthetic"
    interim_dir: str = "data/interim"
    processed_dir: str = "data/processed"
    figures_dir: str = "reports/figures"


@dataclass(frozen=True)
class RealismConfig:
    """Per-patient probabilities of what real CTs show and the phantom does not
    (:mod:`lungseg.synthetic.realism`); all 0 = off (the cohort is then unchanged)."""

    bases_only_p: float = 0.0  # abdominal CT holding only the lung bases (abdomen below, bowel gas)
    apex_cut_p: float = 0.0  # the scan starts below the lung apex
    bowel_gas_p: float = 0.0  # gas pockets under the diaphragm
    arms_p: float = 0.0  # arms beside the chest
    fissures_p: float = 0.0  # major/minor fissures
    streaks_p: float = 0.0  # beam-hardening streaks
    low_dose_p: float = 0.0  # 1.8-3x noise with a band-pass texture
    fov_padding_p: float = 0.0  # -3024/-2048 HU outside the reconstruction circle

    def any(self) -> bool:
        """Whether any effect can be drawn."""
        return any(v > 0 for v in dataclasses.asdict(self).values())


# The cohort's default (params.yaml synthesize.realism); RealismConfig() itself is all off.
DEFAULT_REALISM = RealismConfig(bases_only_p=0.1, apex_cut_p=0.1, bowel_gas_p=0.3, arms_p=0.3, fissures_p=0.5,
                                streaks_p=0.2, low_dose_p=0.2, fov_padding_p=0.4)


@dataclass(frozen=True)
class SynthesizeConfig:
    """The embedded synthetic LCTSC-style cohort."""

    out_dir: str = "data/raw/synthetic"
    cases: int = 60
    seed: int = 2017
    pathology_fraction: float = 0.5
    workers: int = 2
    max_matrix: int = 512
    realism: RealismConfig = field(default_factory=lambda: DEFAULT_REALISM)


@dataclass(frozen=True)
class RoiAliasConfig:
    """RTSTRUCT ROI names accepted for each lung (compared case- and punctuation-insensitively)."""

    right: tuple[str, ...] = (
        "Lung_R", "LUNG_R", "Lung R", "Lung Right", "R Lung", "Right Lung", "RT Lung", "Lung_Rt", "Lung-R",
    )
    left: tuple[str, ...] = (
        "Lung_L", "LUNG_L", "Lung L", "Lung Left", "L Lung", "Left Lung", "LT Lung", "Lung_Lt", "Lung-L",
    )


@dataclass(frozen=True)
class NiftiConfig:
    """How image/mask NIfTI pairs are found when ``prepare.format`` is ``nifti``.

    ``{case}`` in a pattern stands for the case ID; patterns are globbed
    recursively under the raw folder. Mask labels say which value marks which lung;
    a mask holding only 0/1 while ``binary_split`` is true is split into right/left
    along the patient's left-right axis.
    """

    image_pattern: str = "{case}_ct.nii.gz"
    mask_pattern: str = "{case}_lungs.nii.gz"
    right_label: int = 1
    left_label: int = 2
    binary_split: bool = True


@dataclass(frozen=True)
class SplitConfig:
    """Seeded patient-level split fractions (must sum to 1), k folds for cross-validation, and an
    optional split file that fixes the subsets by case ID (e.g. LCTSC's official train/test)."""

    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    seed: int = 42
    folds: int = 5  # k-fold cross-validation over the non-test cases (interim folds.json; pipelines/cv); < 2 = none
    file: str = ""  # CSV "pattern,subset" (fnmatch on case IDs; subset train, val or test); "" = by fractions


@dataclass(frozen=True)
class PrepareConfig:
    """Ingestion of DICOM CT + RTSTRUCT (or NIfTI pairs) into canonical NIfTI."""

    format: Literal["dicom", "nifti"] = "dicom"
    on_error: Literal["skip", "fail"] = "skip"
    case_id: Literal["patient_id", "hashed"] = "patient_id"
    max_slice_gap_tolerance: float = 0.05
    # RTSTRUCT contours -> mask: centre = voxels whose centre lies inside; boundary = also the voxels the contour
    # lines are drawn through (OpenCV's polygon fill, as rt-utils and the real reference masks of ../shared do it)
    contour_fill: Literal["centre", "boundary"] = "centre"
    roi_aliases: RoiAliasConfig = field(default_factory=RoiAliasConfig)
    nifti: NiftiConfig = field(default_factory=NiftiConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    n_figure_cases: int = 3
