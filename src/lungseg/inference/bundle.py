"""Model bundles: a folder (or a ``.keras`` file with the JSON beside it) holding ``model.keras``
(``refine.keras`` for the cascade's stage 2) and ``lungseg_config.json`` (``{"preprocess": {...},
"postprocess": {...}}``): finding, reading and loading them. Light on purpose (no MLflow, no
inference code): fine-tuning (:mod:`lungseg.training.finetune`) reads bundles as well as the Segmenter does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lungseg.config import PostprocessConfig, PreprocessConfig, RefineConfig, section_from_dict
from lungseg.config_checks import check_postprocess
from lungseg.errors import ConfigError, LungsegError

MODEL_FILE = "model.keras"
REFINE_FILE = "refine.keras"  # the cascade's stage 2, beside MODEL_FILE in a bundle
CONFIG_FILE = "lungseg_config.json"


def config_json(
    preprocess: PreprocessConfig, postprocess: PostprocessConfig, refine: RefineConfig | None = None
) -> dict[str, Any]:
    """The ``lungseg_config.json`` content for a model bundle (``refine`` only with a stage-2 network)."""

    def plain(cfg: Any) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}

    out = {"preprocess": plain(preprocess), "postprocess": plain(postprocess)}
    if refine is not None:
        out["refine"] = plain(refine)
    return out


def read_refine_config(path: Path) -> RefineConfig | None:
    """The ``refine`` section of a bundle's ``lungseg_config.json`` (None without one)."""
    try:
        raw = json.loads(Path(path).read_text()).get("refine")
        return None if raw is None else section_from_dict(RefineConfig, raw, "refine")
    except (OSError, ValueError, AttributeError, ConfigError) as e:
        raise LungsegError(f"{path}: not a valid lungseg model config ({e})") from e


def read_config_json(path: Path) -> tuple[PreprocessConfig, PostprocessConfig]:
    """Read a bundle's ``lungseg_config.json`` strictly (unknown keys are errors naming the file)."""
    try:
        raw = json.loads(Path(path).read_text())
        # bundles written before preprocess.normalize existed were trained on per-crop standardisation
        pre = section_from_dict(PreprocessConfig, {"normalize": "volume", **raw.get("preprocess", {})}, "preprocess")
        # ... and their surface had no partial-volume rim
        raw_post = raw.get("postprocess", {})
        surface = {"rim": False, **raw_post.get("surface", {})}
        post = section_from_dict(PostprocessConfig, {**raw_post, "surface": surface}, "postprocess")
        check_postprocess(post)
    except (OSError, ValueError, AttributeError, ConfigError) as e:
        raise LungsegError(f"{path}: not a valid lungseg model config ({e})") from e
    return pre, post


def is_model_uri(model: str) -> bool:
    """True for an MLflow model URI (``models:/...``, ``runs:/...``, ``scheme://...``), false for a path."""
    return model.startswith(("models:/", "runs:/")) or "://" in model


def find_bundle(path: str | Path) -> tuple[Path, Path | None]:
    """Locate ``(model.keras, lungseg_config.json or None)`` for a ``.keras`` file, a bundle
    folder or a saved MLflow pyfunc folder (see :func:`lungseg.inference.serving.save_segmenter_model`)."""
    path = Path(path)
    if path.is_file():
        cfg = path.parent / CONFIG_FILE
        return path, cfg if cfg.is_file() else None
    if path.is_dir():
        candidates = [path, *sorted(p.parent for p in path.glob(f"artifacts/*/{MODEL_FILE}"))]
        for d in candidates:
            if (d / MODEL_FILE).is_file():
                return d / MODEL_FILE, d / CONFIG_FILE if (d / CONFIG_FILE).is_file() else None
        raise LungsegError(f"{path}: no {MODEL_FILE} in this folder (nor in artifacts/*/)")
    raise LungsegError(f"{path}: model not found")

