"""The one Segmenter shared by ``evaluate``, ``lungseg predict`` and the served MLflow model.

Any CT (a NIfTI file or a DICOM series folder, any orientation, size and spacing) goes
through exactly the training preprocessing (:func:`lungseg.inference.preprocessing.preprocess_image`
with the preprocessing config saved next to the model), the network (batch of one), then
back onto the scan's own voxel grid: the network-grid probabilities are interpolated
linearly inside the crop box (zero outside), thresholded (``postprocess.threshold``, 0.5),
cleaned up (largest components, holes filled per axial slice) and split into the patient's
right (label 1) and left (label 2) lung, with volumes in mL.

Arrays are indexed ``[i, j, k]`` on the scan's own grid (a :class:`Geometry`, LPS world)
unless a docstring says "canonical" (the RAS axis order of
:func:`lungseg.inference.preprocessing.to_canonical`) or "network grid" (``preprocess.shape``).

A model bundle is a folder (or a ``.keras`` file with the JSON beside it) holding
``model.keras`` and ``lungseg_config.json`` (``{"preprocess": {...}, "postprocess": {...}}``).
This module does not import MLflow (see :mod:`lungseg.inference.serving` for model URIs).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.config import DEFAULT_PARAMS, PostprocessConfig, PreprocessConfig, RefineConfig, load_params
from lungseg.config_checks import check_postprocess
from lungseg.errors import CaseError, LungsegError
from lungseg.inference.bundle import (
    CONFIG_FILE,
    MODEL_FILE,
    REFINE_FILE,
    config_json,
    find_bundle,
    read_config_json,
    read_refine_config,
)
from lungseg.inference.preprocessing import (
    GridMap,
    canonical_view,
    preprocess_image,
    probabilities_to_original,
    resample_to_box,
)
from lungseg.inference.quality import aerated_left_out, assess
from lungseg.io.geometry import Geometry
from lungseg.morphology import bounding_box, fill_holes_2d, label_counts, snap_to_ct, split_merged

log = logging.getLogger(__name__)

RIGHT, LEFT = 1, 2
MERGED_RATIO = 0.2  # a second component below this fraction of the largest means the lungs are merged
GAS_HU = -950.0  # below this a voxel is (almost) pure gas: bowel gas, air outside the body, airway lumen


# --------------------------------------------------------------------------- reading a CT


def check_volume(hu: np.ndarray, name: str) -> None:
    """Raise CaseError (naming ``name``) unless ``hu`` is 3D with at least 2 voxels along each axis."""
    if hu.ndim != 3 or min(hu.shape) < 2:
        raise CaseError(name, f"expected a 3D CT volume, got shape {tuple(hu.shape)}")


def load_ct(path: str | Path, max_gap_tolerance: float = 0.05) -> tuple[np.ndarray, Geometry]:
    """Read a CT from a NIfTI file (``.nii``/``.nii.gz``, HU) or a DICOM folder.

    A DICOM folder (any tree, one patient) goes through the series selection of
    ``prepare``: axial CT Image Storage series only (localizers, other modalities and
    duplicate instances dropped), ORIGINAL/PRIMARY first, then the most slices; slices
    sorted by position along the slice normal; rescale slope/intercept applied.

    Returns:
        ``(hu, geometry)``: float32 Hounsfield units ``[i, j, k]`` and their grid.

    Raises:
        CaseError: (naming the file or folder) unreadable, not 3D, no CT series, several
            patients, inconsistent slice spacing, NaN voxels, ...
    """
    path = Path(path)
    if path.is_dir():
        return _load_dicom_folder(path, max_gap_tolerance)
    if not path.exists():
        raise CaseError(str(path), "no such file or folder")
    from lungseg.io.nifti import read_nifti

    data, geometry = read_nifti(path)
    check_volume(data, str(path))
    return np.asarray(data, dtype=np.float32), geometry


def _load_dicom_folder(folder: Path, max_gap_tolerance: float) -> tuple[np.ndarray, Geometry]:
    from lungseg.io.dicom import read_ct_folder  # the series choice of `prepare`

    ct = read_ct_folder(folder, max_gap_tolerance)
    check_volume(ct.hu, str(folder))
    return ct.hu, ct.geometry


def case_name(path: str | Path) -> str:
    """Output name of an input: a NIfTI file's stem without ``.nii``/``.nii.gz``, a folder's
    name; sanitised to ``[A-Za-z0-9._-]``."""
    path = Path(path)
    name = path.name if path.is_dir() else re.sub(r"\.nii(\.gz)?$", "", path.name, flags=re.IGNORECASE)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100]
    return safe or "case"


# --------------------------------------------------------------------------- model bundles


def write_bundle(
    out_dir: Path, model_path: Path, preprocess: PreprocessConfig, postprocess: PostprocessConfig,
    refine: tuple[Path, RefineConfig] | None = None, onnx: bool = True,
) -> Path:
    """Write a model bundle folder: a copy of ``model_path`` as ``model.keras``, with ``refine``
    the stage-2 network as ``refine.keras``, and the config JSON; with ``onnx`` each network
    also as ``.onnx`` (see :mod:`lungseg.nn.onnx_model`: prediction without importing TensorFlow)."""
    import shutil

    from lungseg.nn.onnx_model import SUFFIX, export_onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, out_dir / MODEL_FILE)
    if onnx:
        export_onnx(out_dir / MODEL_FILE, (out_dir / MODEL_FILE).with_suffix(SUFFIX))
    if refine is not None:
        shutil.copyfile(refine[0], out_dir / REFINE_FILE)
        if onnx:
            export_onnx(out_dir / REFINE_FILE, (out_dir / REFINE_FILE).with_suffix(SUFFIX),
                        sample_size=2 ** (refine[1].depth + 1))
    content = config_json(preprocess, postprocess, refine[1] if refine else None)
    (out_dir / CONFIG_FILE).write_text(json.dumps(content, indent=2) + "\n")
    return out_dir


# --------------------------------------------------------------------------- segmenting


@dataclass
class Segmentation:
    """The result of :meth:`Segmenter.segment` for one CT.

    Attributes:
        labels: uint8 ``[i, j, k]`` on the CT's own grid: 0 background, 1 right lung, 2 left lung.
        network_probability: float32 network output on the network grid (canonical RAS).
        network_image: float32 preprocessed network input (canonical RAS).
        grid: How the network grid maps onto the CT grid.
        volumes_ml: ``right``, ``left`` and ``total`` lung volume in mL (voxel counts x voxel volume).
        timings_s: Seconds spent in ``preprocess``, ``infer``, ``map_back``, ``postprocess``.
        quality: :func:`lungseg.inference.quality.assess`'s ``{"warnings": [...], "checks": {...}}``.
    """

    labels: np.ndarray
    network_probability: np.ndarray
    network_image: np.ndarray
    grid: GridMap
    volumes_ml: dict[str, float]
    timings_s: dict[str, float] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Plain-language quality warnings (empty when none; see :mod:`lungseg.inference.quality`)."""
        return list(self.quality.get("warnings", []))

    @property
    def probability(self) -> np.ndarray:
        """float32 lung probability ``[i, j, k]`` on the CT's own grid (before post-processing;
        0 outside the crop box) of the 64^3 network; with the cascade the labels come from the
        refined probability instead. Computed on request: segmenting only needs the crop box."""
        return probabilities_to_original(self.network_probability, self.grid)


def resample_back_box(prob: np.ndarray, grid: GridMap) -> np.ndarray:
    """Network-grid probabilities -> float32 values on the crop box of the canonical grid
    (shape ``crop_hi - crop_lo``; :func:`lungseg.inference.preprocessing.resample_to_box`)."""
    return resample_to_box(prob, tuple(h - lo for lo, h in zip(grid.crop_lo, grid.crop_hi)))


def postprocess_box(
    mask: np.ndarray, right_axis_positive: bool, voxel_ml: float, cfg: PostprocessConfig,
    hu: np.ndarray | None = None,
) -> np.ndarray:
    """Thresholded lung mask (canonical RAS axis order, axis 0 = left-right) -> uint8 labels.

    With ``hu`` (the CT on the same grid), components more than ``cfg.max_gas_fraction`` of whose
    voxels are below :data:`GAS_HU` are gas (bowel, stomach, air outside the body), not lung, and
    are dropped first: lung parenchyma, even emphysematous, is mostly above it (tissue, blood and
    air mixed in each voxel). Then it keeps the ``keep_components`` largest 6-connected components
    of at least ``min_component_ml`` (0 = all of them). Two lungs: the two largest components,
    unless the second is under :data:`MERGED_RATIO` of the largest, in which case the
    largest holds both lungs and is cut along axis 0 at its narrowest column near its
    centre (:func:`lungseg.morphology.split_merged`). The lung whose centroid lies further
    toward the patient's right is label 1 (``right_axis_positive``: larger axis-0 index is
    the patient's right, true in canonical RAS); extra kept components go to the side of
    the nearer lung centroid. With ``fill_holes`` each lung's holes are filled per axial
    slice (axis 2).
    """
    out = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return out
    lab, n = ndimage.label(mask)
    sizes = label_counts(lab, n)[1:]
    lung_like = np.ones(n, dtype=bool)
    if hu is not None and cfg.max_gas_fraction < 1.0:
        gas = label_counts(lab, n, hu < GAS_HU)[1:]
        lung_like = gas <= cfg.max_gas_fraction * sizes
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable")
             if sizes[i] * voxel_ml >= cfg.min_component_ml and lung_like[i]]
    if cfg.keep_components > 0:
        order = order[: cfg.keep_components]
    if not order:
        return out
    objects = ndimage.find_objects(lab)

    def part(c: int) -> tuple[tuple[slice, ...], np.ndarray]:
        sl = objects[c - 1]
        return sl, lab[sl] == c

    lungs = [part(c) for c in order[:2]]
    extras = [part(c) for c in order[2:]]
    merged = len(order) == 1 or sizes[order[1] - 1] < MERGED_RATIO * sizes[order[0] - 1]
    if merged and cfg.keep_components != 1:
        sl, m = lungs[0]
        if len(order) > 1 and cfg.keep_components == 0:
            extras = [lungs[1], *extras]
        a, b = split_merged(m, 0)
        lungs = [(sl, a), (sl, b)] if a.any() and b.any() else [lungs[0]]
    elif cfg.keep_components == 1:
        lungs = lungs[:1]

    def centre0(p: tuple[tuple[slice, ...], np.ndarray]) -> float:
        sl, m = p
        return float(sl[0].start + np.flatnonzero(m.any(axis=(1, 2))).mean()) if m.any() else 0.0

    centres = [centre0(p) for p in lungs]
    if len(lungs) == 2:
        first_is_right = (centres[0] > centres[1]) == right_axis_positive
        sides = [RIGHT, LEFT] if first_is_right else [LEFT, RIGHT]
    else:  # one lung kept: its side is where it lies relative to the mask's box centre
        mid = 0.5 * (mask.shape[0] - 1)
        sides = [RIGHT if (centres[0] > mid) == right_axis_positive else LEFT]
    for p in extras:
        c = centre0(p)
        nearest = int(np.argmin([abs(c - x) for x in centres]))
        lungs.append(p)
        sides.append(sides[nearest])
    for (sl, m), side in zip(lungs, sides):
        if cfg.fill_holes and m.any():
            inner = bounding_box(m, 1)
            sub = m[inner]
            filled = np.zeros_like(m)
            filled[inner] = fill_holes_2d(sub)
            m = filled
        view = out[sl]
        view[m & (view == 0)] = side
    return out


DEVICES = ("auto", "cpu", "gpu")


def load_network(path: str | Path, device: str = "auto", hint: str = "", onnx: bool = True) -> Any:
    """Load a network for inference: its ``.onnx`` twin through ONNX Runtime when there is one
    (no TensorFlow import; see :mod:`lungseg.nn.onnx_model`) unless ``device`` is ``gpu``, else the
    ``.keras`` file through Keras (on ``gpu``, TensorFlow must find one; on ``cpu``, GPUs are hidden).
    ``onnx=False`` always uses Keras.

    Raises:
        LungsegError: one line naming the file, or the missing GPU.
    """
    import os

    from lungseg.nn.onnx_model import SUFFIX, OnnxModel, available

    if device not in DEVICES:
        raise LungsegError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    onnx_file = Path(path).with_suffix(SUFFIX)
    if onnx and device != "gpu" and onnx_file.is_file() and available():
        try:
            return OnnxModel(onnx_file)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise LungsegError(f"{onnx_file}: cannot load the ONNX model ({type(e).__name__}: {e}){hint}") from e
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # takes effect only before TensorFlow starts
    from lungseg.nn.model import load_keras_model  # imports Keras: only for a .keras network

    model = load_keras_model(path, hint)
    if device == "gpu":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            raise LungsegError("--device gpu: TensorFlow finds no GPU on this machine (use --device cpu)")
    return model


class Segmenter:
    """A loaded model plus its preprocessing and post-processing config.

    Args:
        model: A Keras model mapping ``(1, D, H, W, 1)`` standardised CT to lung probability.
        preprocess: The preprocessing config the model was trained with.
        postprocess: Thresholding and clean-up on the CT's own grid.
    """

    def __init__(
        self, model: Any, preprocess: PreprocessConfig, postprocess: PostprocessConfig | None = None,
        refiner: Any = None,
    ) -> None:
        self.model = model
        self.refiner = refiner  # a lungseg.inference.refine.Refiner: the cascade's stage 2 (None = stage 1 alone)
        self.preprocess = preprocess
        self.postprocess = postprocess or PostprocessConfig()
        check_postprocess(self.postprocess)
        expected = tuple(int(s) for s in preprocess.shape)
        in_shape = tuple(getattr(model, "input_shape", (None, *expected, 1))[1:4])
        if all(s is not None for s in in_shape) and in_shape != expected:
            raise LungsegError(f"model input shape {in_shape} does not match preprocess.shape {expected}")

    @classmethod
    def load(
        cls, path: str | Path, params_path: str | Path | None = DEFAULT_PARAMS,
        postprocess: PostprocessConfig | None = None, device: str = "auto", onnx: bool = True,
    ) -> Segmenter:
        """Load a ``.keras`` file, a bundle folder or a saved pyfunc folder.

        The configs come from the bundle's ``lungseg_config.json``; without one, from
        ``params_path`` (the project's ``params.yaml``) if it exists, else the defaults.
        ``postprocess`` overrides the post-processing config. ``device`` picks the runtime
        (see :func:`load_network`): a bundle's ``.onnx`` networks run without TensorFlow
        unless ``onnx`` is false.
        """
        model_file, cfg_file = find_bundle(path)
        if cfg_file is not None:
            pre, post = read_config_json(cfg_file)
        elif params_path is not None and Path(params_path).is_file():
            params = load_params(params_path)
            pre, post = params.preprocess, params.postprocess
            log.info("%s: no %s beside the model, using %s", model_file, CONFIG_FILE, params_path)
        else:
            pre, post = PreprocessConfig(), PostprocessConfig()
            log.warning("%s: no %s beside the model, using default configs", model_file, CONFIG_FILE)
        refiner = None
        if cfg_file is not None and (model_file.parent / REFINE_FILE).is_file():
            refine_cfg = read_refine_config(cfg_file)
            if refine_cfg is not None:
                from lungseg.inference.refine import Refiner

                refiner = Refiner(load_network(model_file.parent / REFINE_FILE, device, onnx=onnx), refine_cfg)
        segmenter = cls(load_network(model_file, device, onnx=onnx), pre, postprocess or post, refiner)
        if segmenter.runtime == "keras":
            segmenter.predict_network(np.zeros(pre.shape, dtype=np.float32))  # warm-up: first call traces
        return segmenter

    @property
    def runtime(self) -> str:
        """``onnxruntime`` or ``keras``: what runs the network."""
        from lungseg.nn.onnx_model import OnnxModel

        return "onnxruntime" if isinstance(self.model, OnnxModel) else "keras"

    def predict_network(self, image: np.ndarray) -> np.ndarray:
        """Network-grid image ``(D, H, W)`` -> float32 probabilities ``(D, H, W)`` (batch of one)."""
        x = np.asarray(image, dtype=np.float32)[None, ..., None]
        y = self.model(x, training=False)
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        return np.asarray(y, dtype=np.float32)[0, ..., 0]

    def segment(self, hu: np.ndarray, geometry: Geometry) -> Segmentation:
        """Segment one CT.

        Args:
            hu: Hounsfield units ``[i, j, k]`` on ``geometry`` (any orientation, size, spacing).
            geometry: The CT's grid.

        Returns:
            A :class:`Segmentation` on the CT's own grid.
        """
        hu = np.asarray(hu)
        if hu.shape != tuple(geometry.shape):
            raise ValueError(f"hu shape {hu.shape} does not match geometry shape {tuple(geometry.shape)}")
        timings: dict[str, float] = {}
        t = time.perf_counter()
        image, grid = preprocess_image(hu, geometry, self.preprocess)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        net_prob = self.predict_network(image)
        timings["infer"] = time.perf_counter() - t

        t = time.perf_counter()
        box = tuple(slice(lo, hi) for lo, hi in zip(grid.crop_lo, grid.crop_hi))
        prob_box = resample_back_box(net_prob, grid)
        ornt = np.asarray(grid.ornt)
        timings["map_back"] = time.perf_counter() - t

        if self.refiner is not None:
            t = time.perf_counter()
            spacing = tuple(float(geometry.spacing_mm[int(a)]) for a in np.argsort(ornt[:, 0]))
            prob_box = self.refiner.refine(canonical_view(hu, ornt), spacing, prob_box, grid, self.preprocess,
                                           self.postprocess.threshold)
            timings["refine"] = time.perf_counter() - t

        t = time.perf_counter()
        cfg = self.postprocess
        hu_box = canonical_view(hu, ornt)[box]
        if cfg.surface.enabled:
            sf = cfg.surface
            mask = snap_to_ct(hu_box, prob_box, sf.air_hu, sf.p_air, sf.p_tissue, sf.smooth_sigma,
                              sf.rim_hu if sf.rim else None)
        else:
            mask = prob_box > cfg.threshold
        lungs = postprocess_box(mask, True, geometry.voxel_volume_ml, cfg, hu_box)
        # written through its canonical view: no canonical copy (35 MB for 512x512x134, whose first touch cost
        # more than the work on some hosts); column-major like the HU, slice by slice as the writers read it
        labels = np.zeros(grid.original_shape, dtype=np.uint8, order="F")
        canonical_labels = canonical_view(labels, ornt)
        canonical_labels[box] = lungs
        right, total = np.count_nonzero(lungs == RIGHT), np.count_nonzero(lungs)  # np.bincount: an int64 copy
        timings["postprocess"] = time.perf_counter() - t

        v = geometry.voxel_volume_ml
        volumes = {"right": float(right) * v, "left": float(total - right) * v}
        volumes["total"] = volumes["right"] + volumes["left"]
        t = time.perf_counter()
        left_out = float(np.count_nonzero(aerated_left_out(lungs > 0, hu_box))) * v
        quality = assess(canonical_labels, volumes, hu, prob_box, left_out)
        timings["quality"] = time.perf_counter() - t
        return Segmentation(labels, net_prob, image, grid, volumes, timings, quality)

    def segment_path(self, path: str | Path) -> tuple[Segmentation, np.ndarray, Geometry]:
        """Read a CT (see :func:`load_ct`) and segment it; returns ``(segmentation, hu, geometry)``."""
        t = time.perf_counter()
        hu, geometry = load_ct(path)
        load_s = time.perf_counter() - t
        seg = self.segment(hu, geometry)
        seg.timings_s = {"load": load_s, **seg.timings_s}
        return seg, hu, geometry
