"""Typed configuration: one frozen dataclass per ``params.yaml`` section.

``load_params`` is strict: an unknown or misspelt key anywhere is a
:class:`~lungseg.errors.ConfigError` naming the dotted key, and so is a value of
the wrong type. Stage code receives these objects, never a raw dict.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lungseg.config_checks import validate_params
from lungseg.config_data import (  # noqa: F401 (re-exported: the data sections live there)
    DEFAULT_REALISM,
    DataConfig,
    NiftiConfig,
    PrepareConfig,
    RealismConfig,
    RoiAliasConfig,
    SplitConfig,
    SynthesizeConfig,
)
from lungseg.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly 3D augmentation: a probability and a strength per transform.

    These are the knobs Optuna tunes. A strength of 0 (or probability 0) makes the
    transform the identity. Geometric strengths act on image and mask together.
    """

    elastic_p: float = 0.5
    elastic_strength: float = 2.0  # max displacement in voxels of the network grid
    elastic_sigma: float = 6.0  # smoothness of the displacement field, voxels
    rotate_p: float = 0.5
    rotate_max_deg: float = 10.0  # uniform in [-max, max] about each of the three axes
    flip_p: float = 0.5  # per axis listed in flip_axes
    flip_axes: tuple[int, ...] = (0,)
    scale_p: float = 0.5
    scale_max: float = 0.10  # isotropic zoom factor uniform in [1 - max, 1 + max]
    intensity_p: float = 0.5
    intensity_shift_max: float = 0.10  # additive shift uniform in [-max, max] (standardised units)
    noise_p: float = 0.5
    noise_sd: float = 0.05  # Gaussian noise sd (standardised units), uniform in [0, sd]
    brightness_p: float = 0.5
    brightness_max: float = 0.10  # multiplicative factor uniform in [1 - max, 1 + max]


@dataclass(frozen=True)
class PreprocessConfig:
    """Fixed-shape network input (see :mod:`lungseg.inference.preprocessing` for the order of steps)."""

    shape: tuple[int, int, int] = (64, 64, 64)
    crop: str = "thorax"  # thorax: box around the air inside the body (the lungs) | body
    body_threshold_hu: float = -500.0
    air_threshold_hu: float = -400.0  # thorax crop: voxels below this inside the body are air
    crop_margin_mm: float = 20.0
    hu_min: float = -1000.0
    hu_max: float = 400.0
    smooth_sigma: float = 0.5  # Gaussian sigma in network voxels, 0 = off
    # fixed: (window - norm_mean) / norm_sd with constants, the same scale on every scan; volume: each crop's own
    # mean and SD (the paper's way; on real planning CTs the air around neck and shoulders moved real lung
    # 0.7-1.0 SD brighter than any synthetic lung, README "Real CT")
    normalize: Literal["fixed", "volume"] = "fixed"
    norm_mean: float = 0.6  # about the mean and SD of the synthetic cohort's windowed thorax crops
    norm_sd: float = 0.26
    n_figure_cases: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """The paper's 3D U-Net."""

    base_filters: int = 8  # 8 trains 1.8x faster than 16 on 2 CPU cores (params.yaml)
    depth: int = 3
    dropout: float = 0.1
    l2: float = 1e-5
    bn_momentum: float = 0.9


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (the paper's settings by default) and reproducibility."""

    batch_size: int = 4
    max_epochs: int = 90  # the paper: 100; 90 base-8 epochs fit the 20-minute CPU budget
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    lr_factor: float = 0.5
    lr_patience: int = 3
    min_lr: float = 1e-5
    early_stopping_patience: int = 8
    train_subset: int = 0  # use only the first N training cases (0 = all)
    seed: int = 42
    model_path: str = "models/model.keras"
    state_dir: str = "models/train_state"  # resume state (git- and dvc-ignored)
    max_minutes: float = 16.0  # wall-clock budget: no new epoch starts after this (0 = none)
    # optimiser steps per epoch (an epoch = one validation pass): the budget is max_epochs x steps_per_epoch steps
    # whatever the cohort's size; 0 = one pass over the training cases (the paper's epochs)
    steps_per_epoch: int = 11
    # start from these weights instead of random ones (fine-tuning): "" = none, models:/<name>@<alias> or
    # models:/<name>/<version> (the registry), a model bundle folder, or a .keras file; auto = on data other than
    # the synthetic cohort, the newest registered model trained on it (lungseg.training.finetune.auto_source), else none
    init_from: str = "auto"
    finetune_learning_rate: float = 1e-4  # Adam's learning rate when starting from init_from's weights (0 = learning_rate)


@dataclass(frozen=True)
class SurfaceConfig:
    """The lung surface at the CT's own resolution (:func:`lungseg.morphology.snap_to_ct`).

    The network's probability, interpolated onto the CT grid, says where the lungs are; each CT
    voxel then decides by its own HU: air-like voxels (in-plane smoothed HU < ``air_hu``, about
    halfway between lung and soft tissue) are lung where the probability exceeds ``p_air``, the
    others where it exceeds ``p_tissue``. With ``rim``, the voxels next to that mask (in-plane)
    below ``rim_hu`` join it: the partial-volume edge the lung surface passes through, which
    expert radiotherapy contours include. ``enabled: false``: one threshold (the paper's way).
    """

    enabled: bool = True
    air_hu: float = -400.0
    p_air: float = 0.05
    p_tissue: float = 0.8
    smooth_sigma: float = 0.4  # in-plane Gaussian SD (CT voxels) against noise before the HU test
    rim: bool = False  # add the partial-volume rim (next to the mask, smoothed HU < rim_hu), as RT contours include it
    rim_hu: float = -200.0  # a quarter air between lung (about -850 HU) and chest wall (about 0 HU)


@dataclass(frozen=True)
class PostprocessConfig:
    """From the network's probability to lung labels on the CT's own grid (inference).

    ``surface`` decides each CT voxel from the interpolated probability and its own HU
    (``threshold`` alone where it is off); components that are mostly gas
    (``max_gas_fraction``) are dropped; the ``keep_components`` largest 6-connected components
    are kept (2: the two lungs; 0 keeps all), each at least ``min_component_ml``;
    ``fill_holes`` fills enclosed holes per axial slice (vessels, nodules). Work is confined
    to the crop box (speed on 512x512 scans).
    """

    keep_components: int = 2
    min_component_ml: float = 10.0
    fill_holes: bool = True
    threshold: float = 0.5  # used where surface.enabled is false
    max_gas_fraction: float = 0.5  # components with more of their voxels below -950 HU are gas, not lung; 1 = off
    surface: SurfaceConfig = field(default_factory=SurfaceConfig)

    def thresholded(self) -> PostprocessConfig:
        """The same clean-up on one threshold: the full-resolution surface off (the paper's way)."""
        return dataclasses.replace(self, surface=dataclasses.replace(self.surface, enabled=False))


@dataclass(frozen=True)
class RefineConfig:
    """Stage 2 of the cascade (:mod:`lungseg.training.refine`): a second 3D U-Net (the same blocks) at
    ``spacing_mm`` inside the lungs' box found by stage 1 (grown by ``margin_mm``), fed the CT
    and the stage-1 probability; its output goes straight onto the CT grid. ``enabled: false``
    leaves the paper's single 64^3 network (``train_refine`` then trains nothing)."""

    enabled: bool = False
    spacing_mm: float = 2.0
    margin_mm: float = 12.0
    patch: tuple[int, int, int] = (64, 64, 64)  # training patches (fine voxels); inference runs on the whole box
    base_filters: int = 8
    depth: int = 3
    dropout: float = 0.0
    l2: float = 1.0e-5
    batch_size: int = 2
    patches_per_epoch: int = 48
    val_patches_per_case: int = 2
    max_epochs: int = 30
    max_minutes: float = 12.0
    learning_rate: float = 1.0e-3
    early_stopping_patience: int = 6
    boundary_fraction: float = 0.7  # share of patches centred on the lung surface
    seed: int = 7
    model_path: str = "models/refine/refine.keras"


@dataclass(frozen=True)
class SearchRange:
    """One searched ``augment`` value: uniform in ``[low, high]``, log-uniform if ``log``."""

    low: float
    high: float
    log: bool = False


DEFAULT_SEARCH_SPACE: dict[str, SearchRange] = {
    "elastic_p": SearchRange(0.0, 1.0),
    "elastic_strength": SearchRange(0.5, 4.0, log=True),
    "rotate_p": SearchRange(0.0, 1.0),
    "rotate_max_deg": SearchRange(2.0, 20.0, log=True),
    "flip_p": SearchRange(0.0, 0.5),
    "scale_p": SearchRange(0.0, 1.0),
    "scale_max": SearchRange(0.02, 0.2, log=True),
    "intensity_p": SearchRange(0.0, 1.0),
    "intensity_shift_max": SearchRange(0.02, 0.3, log=True),
    "noise_p": SearchRange(0.0, 1.0),
    "noise_sd": SearchRange(0.01, 0.2, log=True),
    "brightness_p": SearchRange(0.0, 1.0),
    "brightness_max": SearchRange(0.02, 0.3, log=True),
}


@dataclass(frozen=True)
class TuneConfig:
    """Optuna search over the ``augment`` values (stage ``tune``, :mod:`lungseg.training.tuning`).

    Each trial trains ``epochs`` epochs on the first ``train_subset`` training cases and
    scores the best validation Dice. ``storage``: a ``.journal``/``.log`` file (several
    processes on one machine) or a database URL (several machines). The study's name is
    ``study_name`` plus a hash of everything that defines the objective, so changing the
    search space, epochs, data or model starts a new study while raising ``n_trials``
    continues the old one.
    """

    n_trials: int = 10  # finished trials the stage brings the study to (0 = off: params.yaml values pass through)
    epochs: int = 10
    steps_per_epoch: int = 4  # optimiser steps per trial epoch (0 = one pass over the trial's training cases)
    train_subset: int = 16  # first N training cases per trial (0 = all)
    seed: int = 42  # TPE sampler and the trials' training seed
    storage: str = "optuna/tune.journal"
    study_name: str = "augment"
    sampler_startup_trials: int = 4  # random trials before TPE models the results
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_startup_trials: int = 3  # median: no pruning until this many trials have finished
    pruner_warmup_steps: int = 4  # median: earliest epoch at which a trial can be pruned
    search_space: dict[str, SearchRange] = field(default_factory=lambda: dict(DEFAULT_SEARCH_SPACE))
    timeout_minutes: float = 6.0  # wall-clock budget of one run of the stage: no new trial after it (0 = none)


@dataclass(frozen=True)
class RealCTCase:
    """A real scan scored apart from the test split (never trained or tuned on).

    ``ct``: a NIfTI file in HU or a DICOM series folder; ``truth``: a NIfTI mask (> 0 = lung)
    on any grid (mapped through world coordinates), empty when there is none; ``coverage``:
    ``full`` (whole chest), ``partial`` (part of the lungs, e.g. the bases of an abdominal
    CT) or ``none`` (no lung in the scan: any lung found is a false positive).
    """

    ct: str
    truth: str = ""
    coverage: Literal["full", "partial", "none"] = "full"


_REAL_CT = "../shared/real-ct"  # params.yaml evaluate.real_ct; see ../shared/real-ct/README.md
_NSCLC_DICOM = "data/external/nsclc-radiomics"  # git-ignored: ../shared is read-only, `make real-ct` extracts here
DEFAULT_REAL_CT: dict[str, RealCTCase] = {
    "copdgene_10002k": RealCTCase(f"{_REAL_CT}/copdgene-10002k/ct.nii.gz", f"{_REAL_CT}/copdgene-10002k/lungs.nii.gz"),
    "copdgene_10002k_dicom": RealCTCase(f"{_REAL_CT}/copdgene-10002k/dicom", f"{_REAL_CT}/copdgene-10002k/lungs.nii.gz"),
    "abdomen_lung_bases": RealCTCase(f"{_REAL_CT}/abdomen-lung-bases/ct.nii.gz",
                                     f"{_REAL_CT}/abdomen-lung-bases/lungs.nii.gz", "partial"),
    "abdomen_no_lung": RealCTCase(f"{_REAL_CT}/abdomen-lung-bases/no-lung-dicom", coverage="none"),
    # full-resolution planning CTs: the DICOM series are extracted by `make real-ct` (README "Real CT")
    **{f"nsclc_{n}": RealCTCase(f"{_NSCLC_DICOM}/LUNG1-{n}/dicom", f"{_REAL_CT}/nsclc-radiomics/LUNG1-{n}/lungs.nii.gz")
       for n in ("001", "002", "003")},
}


@dataclass(frozen=True)
class EvaluateConfig:
    """Test-split evaluation and registration (stage ``evaluate``).

    The new model version gets the alias ``alias`` only if its test Dice in the original
    geometry is at least ``min_dice`` and at least the current holder's.
    """

    min_dice: float = 0.90
    alias: str = "champion"
    baseline: bool = True  # also score the classical threshold baseline on the same cases
    figures: bool = True  # one Fig. 6-style PNG per test case
    real_ct: dict[str, RealCTCase] = field(default_factory=lambda: dict(DEFAULT_REAL_CT))  # a missing path skips a case


@dataclass(frozen=True)
class CVConfig:
    """k-fold cross-validation (``pipelines/cv/dvc.yaml``; k is ``prepare.split.folds``)."""

    folds: tuple[int, ...] = (0, 1, 2, 3, 4)  # the folds to train and evaluate (DVC foreach runs one stage per fold)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking and registry."""

    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "lung-segmentation"
    registered_model: str = "lung-segmentation"


@dataclass(frozen=True)
class Params:
    """All of ``params.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"params key '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"params key '{key}' must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params key '{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"params key '{key}' must have {len(args)} items, got {value!r}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"params key '{key}' must be a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(kt, k, key): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params key '{key}' must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in names:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"unknown params key '{dotted}' (allowed here: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in raw.items():
        dotted = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _convert(hints[k], v, dotted)
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            dotted = f"{prefix}.{f.name}" if prefix else f.name
            raise ConfigError(f"params key '{dotted}' is required")
    return cls(**kwargs)


def section_from_dict(cls: type, raw: dict[str, Any], key: str) -> Any:
    """Build one config section (e.g. :class:`PreprocessConfig`) strictly from a mapping.

    Used to read configs saved next to a model; unknown keys raise ConfigError naming ``key.<name>``.
    """
    return _convert(cls, raw, key)


def flatten_params(params: Params) -> dict[str, Any]:
    """Dotted-key view of every parameter (for experiment tracking)."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif isinstance(value, dict) and all(dataclasses.is_dataclass(v) for v in value.values()):
                for name, item in value.items():
                    walk(item, f"{key}.{name}.")
            else:
                out[key] = list(value) if isinstance(value, tuple) else value

    walk(params, "")
    return out


def params_from_dict(raw: dict[str, Any] | None) -> Params:
    """Build :class:`Params` from a parsed YAML mapping (missing keys take defaults)."""
    params = _build(Params, raw or {}, "")
    validate_params(params)
    return params


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read ``params.yaml`` into typed config objects.

    Raises:
        ConfigError: the file is missing or not YAML, or a key is unknown or has a bad value.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: params file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return params_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
