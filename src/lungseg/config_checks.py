"""Range and consistency checks of the typed configuration (:mod:`lungseg.config`).

Each check raises :class:`~lungseg.errors.ConfigError` naming the dotted ``params.yaml`` key and the
bad value. :func:`validate_params` runs them all when ``load_params`` builds :class:`~lungseg.config.Params`;
the section checks are also used alone (a model bundle's saved postprocess config, the tuner's search space).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import TYPE_CHECKING

from lungseg.errors import ConfigError

if TYPE_CHECKING:
    from lungseg.config import AugmentConfig, Params, PostprocessConfig, TuneConfig


AUGMENT_PROBABILITIES = ("elastic_p", "rotate_p", "flip_p", "scale_p", "intensity_p", "noise_p", "brightness_p")
AUGMENT_STRENGTHS = ("elastic_strength", "rotate_max_deg", "scale_max", "intensity_shift_max", "noise_sd", "brightness_max")


def check_augment(cfg: AugmentConfig) -> None:
    """Check the ranges of an augmentation config (also :func:`lungseg.training.augmentation.check_config`).

    Raises:
        ConfigError: naming the ``augment.*`` key whose value is out of range.
    """
    for name in AUGMENT_PROBABILITIES:
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"params key 'augment.{name}' must be a probability in [0, 1], got {value!r}")
    for name in AUGMENT_STRENGTHS:
        value = getattr(cfg, name)
        if not (value >= 0.0 and math.isfinite(value)):
            raise ConfigError(f"params key 'augment.{name}' must be finite and >= 0, got {value!r}")
    if not (cfg.elastic_sigma > 0.0 and math.isfinite(cfg.elastic_sigma)):
        raise ConfigError(f"params key 'augment.elastic_sigma' must be > 0, got {cfg.elastic_sigma!r}")
    if cfg.rotate_max_deg > 180.0:
        raise ConfigError(f"params key 'augment.rotate_max_deg' must be <= 180, got {cfg.rotate_max_deg!r}")
    for name in ("scale_max", "brightness_max"):
        value = getattr(cfg, name)
        if value >= 1.0:
            raise ConfigError(f"params key 'augment.{name}' must be < 1, got {value!r}")
    axes = cfg.flip_axes
    if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise ConfigError(f"params key 'augment.flip_axes' must list distinct axes from 0, 1, 2, got {axes!r}")



def validate_params(p: Params) -> None:
    check_augment(p.augment)
    pp = p.preprocess
    if any(s < 2**p.model.depth or s % (2**p.model.depth) for s in pp.shape):
        raise ConfigError(
            f"params key 'preprocess.shape' must be divisible by 2**model.depth = {2**p.model.depth}, got {list(pp.shape)}"
        )
    if pp.crop not in ("thorax", "body"):
        raise ConfigError(f"params key 'preprocess.crop' must be 'thorax' or 'body', got {pp.crop!r}")
    if pp.crop_margin_mm < 0:
        raise ConfigError(f"params key 'preprocess.crop_margin_mm' must be >= 0, got {pp.crop_margin_mm}")
    if pp.hu_max <= pp.hu_min:
        raise ConfigError(f"params keys 'preprocess.hu_min/hu_max' need hu_max > hu_min, got {pp.hu_min}, {pp.hu_max}")
    if pp.smooth_sigma < 0:
        raise ConfigError(f"params key 'preprocess.smooth_sigma' must be >= 0, got {pp.smooth_sigma}")
    if pp.norm_sd <= 0:
        raise ConfigError(f"params key 'preprocess.norm_sd' must be > 0, got {pp.norm_sd}")
    for name, value in dataclasses.asdict(p.synthesize.realism).items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"params key 'synthesize.realism.{name}' must be a probability in [0, 1], got {value}")
    r = p.refine
    if r.spacing_mm <= 0 or r.margin_mm < 0 or r.batch_size < 1 or r.max_epochs < 1 or r.patches_per_epoch < r.batch_size:
        raise ConfigError("params keys 'refine.*': spacing_mm > 0, margin_mm >= 0, batch_size >= 1, max_epochs >= 1 and "
                          f"patches_per_epoch >= batch_size are needed, got {r}")
    if any(s % (2**r.depth) for s in r.patch) or not 0 <= r.boundary_fraction <= 1:
        raise ConfigError(f"params key 'refine.patch' must be divisible by 2**depth = {2**r.depth} and "
                          f"'refine.boundary_fraction' in [0, 1], got {r.patch}, {r.boundary_fraction}")
    if not (math.isfinite(p.train.max_minutes) and p.train.max_minutes >= 0):
        raise ConfigError(f"params key 'train.max_minutes' must be >= 0 (0 = no budget), got {p.train.max_minutes}")
    if p.train.batch_size < 1 or p.train.max_epochs < 1:
        raise ConfigError(f"params keys 'train.batch_size/max_epochs' must be >= 1, got {p.train.batch_size}, {p.train.max_epochs}")
    if not (math.isfinite(p.train.finetune_learning_rate) and p.train.finetune_learning_rate >= 0):
        raise ConfigError(f"params key 'train.finetune_learning_rate' must be >= 0, got {p.train.finetune_learning_rate}")
    if p.train.steps_per_epoch < 0:
        raise ConfigError(f"params key 'train.steps_per_epoch' must be >= 0 (0 = one pass), got {p.train.steps_per_epoch}")
    s = p.prepare.split
    fractions = (s.train, s.val, s.test)
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"params key 'prepare.split' fractions must be >= 0 and sum to 1, got {fractions}")
    k = s.folds
    if any(f < 0 or f >= k for f in p.cv.folds) or len(set(p.cv.folds)) != len(p.cv.folds):
        raise ConfigError(f"params key 'cv.folds' must list distinct folds from 0 to prepare.split.folds - 1 = {k - 1}, "
                          f"got {list(p.cv.folds)}")
    check_postprocess(p.postprocess)
    check_tune(p.tune, p.augment)
    if p.synthesize.cases < 1:
        raise ConfigError(f"params key 'synthesize.cases' must be >= 1, got {p.synthesize.cases}")
    if not 0.0 <= p.synthesize.pathology_fraction <= 1.0:
        raise ConfigError(
            f"params key 'synthesize.pathology_fraction' must be in [0, 1], got {p.synthesize.pathology_fraction}"
        )



def check_postprocess(cfg: PostprocessConfig) -> None:
    """Raise ConfigError for a bad ``postprocess`` value."""
    if cfg.keep_components < 0:
        raise ConfigError(f"params key 'postprocess.keep_components' must be >= 0, got {cfg.keep_components}")
    if cfg.min_component_ml < 0:
        raise ConfigError(f"params key 'postprocess.min_component_ml' must be >= 0, got {cfg.min_component_ml}")
    if not 0.0 < cfg.threshold < 1.0:
        raise ConfigError(f"params key 'postprocess.threshold' must be in (0, 1), got {cfg.threshold}")
    if not 0.0 <= cfg.max_gas_fraction <= 1.0:
        raise ConfigError(f"params key 'postprocess.max_gas_fraction' must be in [0, 1], got {cfg.max_gas_fraction}")
    sf = cfg.surface
    if sf.rim and not sf.air_hu <= sf.rim_hu:
        raise ConfigError(f"params key 'postprocess.surface.rim_hu' must be >= air_hu ({sf.air_hu}), got {sf.rim_hu}")
    if not (0.0 < sf.p_air <= sf.p_tissue < 1.0 and sf.smooth_sigma >= 0):
        raise ConfigError("params keys 'postprocess.surface.*' need 0 < p_air <= p_tissue < 1 and smooth_sigma >= 0, "
                          f"got p_air={sf.p_air}, p_tissue={sf.p_tissue}, smooth_sigma={sf.smooth_sigma}")



def check_tune(cfg: TuneConfig, augment: AugmentConfig) -> None:
    """Raise ConfigError for a bad ``tune`` value or a search range that ``augment`` would reject."""
    for name in ("n_trials", "train_subset", "steps_per_epoch", "sampler_startup_trials", "pruner_startup_trials",
                 "pruner_warmup_steps"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"params key 'tune.{name}' must be >= 0, got {getattr(cfg, name)}")
    if cfg.epochs < 1:
        raise ConfigError(f"params key 'tune.epochs' must be >= 1, got {cfg.epochs}")
    if not (math.isfinite(cfg.timeout_minutes) and cfg.timeout_minutes >= 0):
        raise ConfigError(f"params key 'tune.timeout_minutes' must be >= 0 (0 = no budget), got {cfg.timeout_minutes}")
    if not cfg.study_name:
        raise ConfigError("params key 'tune.study_name' must not be empty")
    if "://" not in cfg.storage and not cfg.storage.endswith((".journal", ".log")):
        raise ConfigError(
            f"params key 'tune.storage' must be a file ending in .journal or .log, or a database URL, got {cfg.storage!r}"
        )
    if not cfg.search_space and cfg.n_trials > 0:
        raise ConfigError("params key 'tune.search_space' must name at least one augment value when tune.n_trials > 0")
    hints = typing.get_type_hints(type(augment))
    for name, r in cfg.search_space.items():
        key = f"tune.search_space.{name}"
        if hints.get(name) is not float:
            allowed = ", ".join(k for k, t in hints.items() if t is float)
            raise ConfigError(f"params key '{key}' is not a numeric augment value (allowed: {allowed})")
        if not (math.isfinite(r.low) and math.isfinite(r.high) and r.low < r.high):
            raise ConfigError(f"params key '{key}' needs finite low < high, got low={r.low}, high={r.high}")
        if r.log and r.low <= 0:
            raise ConfigError(f"params key '{key}' is searched on a log scale, so low must be > 0, got {r.low}")
        for end in ("low", "high"):
            try:
                check_augment(dataclasses.replace(augment, **{name: getattr(r, end)}))
            except ConfigError as e:
                raise ConfigError(f"params key '{key}.{end}' is out of range: {e}") from e
