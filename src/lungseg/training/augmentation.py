"""On-the-fly 3D augmentation of a preprocessed CT volume and its lung mask.

Arrays are ``(D, H, W)`` = the axes of the preprocessed network grid, in that
order; every axis number here (``flip_axes``, rotation axes, displacement
components) refers to that order. :mod:`lungseg.inference.preprocessing` puts the network
grid in canonical RAS order, so axis 0 is the patient's left-right axis, 1
posterior-anterior, 2 inferior-superior. The image is float32 with standardised
intensities (roughly zero mean, unit sd); the mask is binary (0/1, any numeric
dtype).

A random transform is split in three, as in paper section IV ("Data
augmentation"), made reproducible:

* :func:`sample_params` draws the random values for one sample from an
  :class:`~lungseg.config.AugmentConfig` and a generator (each transform with
  its own probability);
* :class:`AugmentParams` holds them (a frozen, hashable record);
* :func:`apply` is the deterministic function of image, mask and params.

:func:`augment` chains the first and last with a per-sample integer seed.

Geometry. Elastic deformation, rotations about all three axes and isotropic
scaling, all about the volume centre, are composed into one backward coordinate
map, and each array is resampled once with ``scipy.ndimage.map_coordinates``
(linear interpolation). Points that fall outside the volume take the value of
the nearest edge voxel (``mode='nearest'``) for image and mask alike, so a lung
cut by the edge of the grid (apex, base) continues past it in both arrays
instead of meeting an artificial air slab. The mask is interpolated linearly and
thresholded at 0.5, so it stays binary and aligned with the image. Flips are
array flips, done after resampling. Rotations and displacements are in voxel
units of the network grid.

Intensity (image only, in this order): additive shift, additive Gaussian noise,
multiplicative brightness factor.

Pure numpy/scipy, no TensorFlow: meant to be called through
``tf.numpy_function``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungseg.config import AugmentConfig
from lungseg.config_checks import check_augment

_SEED_HIGH = 2**63 - 1


@dataclass(frozen=True)
class AugmentParams:
    """The sampled values of one augmentation; neutral values mean "not applied".

    Attributes:
        shape: ``(D, H, W)`` of the volume the params were drawn for.
        elastic_strength: Max displacement of the elastic field, voxels (0 = off).
        elastic_sigma: Smoothness (Gaussian sd) of the elastic field, voxels.
        elastic_seed: Seed of the elastic field's random numbers.
        angles_deg: Rotation angles about axes 0, 1, 2, degrees (zeros = off).
        zoom: Isotropic scale factor, > 1 enlarges the content (1 = off).
        flip_axes: Axes to flip, ascending (empty = off).
        shift: Additive intensity shift, standardised units (0 = off).
        noise_sd: Sd of the additive Gaussian noise (0 = off).
        noise_seed: Seed of the noise.
        brightness: Multiplicative intensity factor (1 = off).
    """

    shape: tuple[int, int, int]
    elastic_strength: float = 0.0
    elastic_sigma: float = 1.0
    elastic_seed: int = 0
    angles_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    zoom: float = 1.0
    flip_axes: tuple[int, ...] = ()
    shift: float = 0.0
    noise_sd: float = 0.0
    noise_seed: int = 0
    brightness: float = 1.0

    @property
    def resamples(self) -> bool:
        """Whether the params need a resampling (elastic, rotation or scaling)."""
        return self.elastic_strength > 0 or any(a != 0 for a in self.angles_deg) or self.zoom != 1.0


# Validation lives with the value it checks (lungseg.config); the name stays importable from here.
check_config = check_augment


def sample_params(cfg: AugmentConfig, rng: np.random.Generator, shape: tuple[int, ...]) -> AugmentParams:
    """Draw the random values of one augmentation.

    Each transform is applied with its own probability; strengths are uniform in
    ``[-max, max]`` (rotation angle per axis, intensity shift), ``[1 - max, 1 + max]``
    (zoom, brightness) or ``[0, sd]`` (noise sd). The elastic field always has its
    maximum displacement equal to ``elastic_strength``; its randomness is its
    seed. Flips are decided per axis in ``flip_axes``. The same number of values
    is drawn whatever the outcomes, so a transform's draws do not depend on the
    other transforms' probabilities.

    Args:
        cfg: Probabilities and strengths.
        rng: Source of randomness (advanced by the call).
        shape: ``(D, H, W)`` of the volume to augment.

    Returns:
        The sampled params.

    Raises:
        ConfigError: ``cfg`` has a value out of range.
        ValueError: ``shape`` is not 3D.
    """
    check_config(cfg)
    if len(shape) != 3:
        raise ValueError(f"augmentation needs a 3D (D, H, W) shape, got {tuple(shape)}")
    u = rng.random(6)  # one "is it applied" draw per transform, flips apart
    flip_u = rng.random(len(cfg.flip_axes))
    angles = rng.uniform(-cfg.rotate_max_deg, cfg.rotate_max_deg, size=3)
    zoom = rng.uniform(1.0 - cfg.scale_max, 1.0 + cfg.scale_max)
    shift = rng.uniform(-cfg.intensity_shift_max, cfg.intensity_shift_max)
    noise_sd = rng.uniform(0.0, cfg.noise_sd)
    brightness = rng.uniform(1.0 - cfg.brightness_max, 1.0 + cfg.brightness_max)
    elastic_seed, noise_seed = (int(s) for s in rng.integers(0, _SEED_HIGH, size=2))
    return AugmentParams(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        elastic_strength=float(cfg.elastic_strength) if u[0] < cfg.elastic_p else 0.0,
        elastic_sigma=float(cfg.elastic_sigma),
        elastic_seed=elastic_seed,
        angles_deg=tuple(float(a) for a in angles) if u[1] < cfg.rotate_p else (0.0, 0.0, 0.0),
        zoom=float(zoom) if u[2] < cfg.scale_p else 1.0,
        flip_axes=tuple(sorted(a for a, v in zip(cfg.flip_axes, flip_u) if v < cfg.flip_p)),
        shift=float(shift) if u[3] < cfg.intensity_p else 0.0,
        noise_sd=float(noise_sd) if u[4] < cfg.noise_p else 0.0,
        noise_seed=noise_seed,
        brightness=float(brightness) if u[5] < cfg.brightness_p else 1.0,
    )


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """3x3 rotation about axes 0, 1 and 2 (applied in that order), in (D, H, W) index space."""
    out = np.eye(3)
    for axis, deg in enumerate(angles_deg):
        i, j = [k for k in range(3) if k != axis]
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        rot = np.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        out = rot @ out
    return out


def _linear_upsample(field: np.ndarray, axis: int, n: int, step: float) -> np.ndarray:
    """Linear interpolation of ``field`` along ``axis`` from nodes spaced ``step`` fine voxels
    apart to ``n`` fine voxels: two elementwise products per voxel (a matrix product would go
    through BLAS, whose kernels round differently from one CPU to another)."""
    n_coarse = field.shape[axis]
    pos = np.arange(n) / step
    lo = np.minimum(np.floor(pos).astype(int), n_coarse - 2)
    shape = [1] * field.ndim
    shape[axis] = n
    w1 = (pos - lo).astype(np.float32).reshape(shape)
    w0 = (1.0 - (pos - lo)).astype(np.float32).reshape(shape)
    return np.take(field, lo, axis=axis) * w0 + np.take(field, lo + 1, axis=axis) * w1


def elastic_field(shape: tuple[int, int, int], strength: float, sigma: float, seed: int) -> np.ndarray:
    """Smooth random displacement field, float32 ``(3, D, H, W)``, in voxels.

    White noise on a coarse grid (node spacing ``max(1, sigma / 2)`` voxels) is
    Gaussian-smoothed with ``sigma`` (in fine voxels) and linearly upsampled to
    ``shape``; it is then scaled so its largest displacement vector has length
    ``strength``.
    """
    step = max(1.0, sigma / 2.0)
    coarse = tuple(max(2, math.ceil((n - 1) / step) + 1) for n in shape)
    noise = np.random.default_rng(seed).standard_normal((3, *coarse))
    smooth = ndimage.gaussian_filter(noise, sigma=(0.0, sigma / step, sigma / step, sigma / step), mode="reflect")
    field = smooth.astype(np.float32)
    for axis, n in enumerate(shape):  # upsample one axis at a time
        field = _linear_upsample(field, axis + 1, n, step)
    field = np.ascontiguousarray(field)
    longest = float(np.sqrt(field[0] * field[0] + field[1] * field[1] + field[2] * field[2]).max())
    if longest > 0:
        field *= np.float32(strength / longest)
    return field


def coordinate_map(params: AugmentParams) -> np.ndarray:
    """Backward map of the geometric transforms: float32 ``(3, D, H, W)`` source coordinates.

    Output voxel ``x`` samples the input at ``c + R^T (x - c) / zoom + u(x)``, with
    ``c`` the volume centre, ``R`` the rotation and ``u`` the elastic field: the
    content is rotated by ``R`` and scaled by ``zoom`` about the centre, then
    elastically deformed.
    """
    shape = params.shape
    inverse = rotation_matrix(params.angles_deg).T / params.zoom
    centre = [(n - 1) / 2.0 for n in shape]
    axes = [
        (np.arange(n, dtype=np.float32) - np.float32(c)).reshape([-1 if k == a else 1 for k in range(3)])
        for a, (n, c) in enumerate(zip(shape, centre))
    ]
    if params.elastic_strength > 0:
        coords = elastic_field(shape, params.elastic_strength, params.elastic_sigma, params.elastic_seed)
    else:
        coords = np.zeros((3, *shape), dtype=np.float32)
    for i in range(3):
        coords[i] += np.float32(centre[i])
        for j in range(3):
            if inverse[i, j] != 0:
                coords[i] += np.float32(inverse[i, j]) * axes[j]
    return coords


def apply(image: np.ndarray, mask: np.ndarray, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Apply sampled params to an image and its mask (deterministic).

    Args:
        image: ``(D, H, W)`` standardised CT volume.
        mask: ``(D, H, W)`` binary lung mask (0/1).
        params: Values from :func:`sample_params` for this shape.

    Returns:
        New float32 ``(D, H, W)`` arrays: the augmented image and the binary
        (0/1) augmented mask. With neutral params they equal the inputs exactly.

    Raises:
        ValueError: the arrays' shapes differ from each other or from ``params.shape``.
    """
    if image.shape != mask.shape or tuple(image.shape) != params.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must both have shape {params.shape}")
    image = np.array(image, dtype=np.float32)
    mask = np.array(mask, dtype=np.float32)
    if params.resamples:
        coords = coordinate_map(params)
        image = ndimage.map_coordinates(image, coords, output=np.float32, order=1, mode="nearest")
        moved = ndimage.map_coordinates(mask, coords, output=np.float32, order=1, mode="nearest")
        mask = (moved > 0.5).astype(np.float32)
    if params.flip_axes:
        image = np.ascontiguousarray(np.flip(image, axis=params.flip_axes))
        mask = np.ascontiguousarray(np.flip(mask, axis=params.flip_axes))
    if params.shift != 0:
        image += np.float32(params.shift)
    if params.noise_sd > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(image.shape, dtype=np.float32)
        image += np.float32(params.noise_sd) * noise
    if params.brightness != 1.0:
        image *= np.float32(params.brightness)
    return image, mask


def augment(image: np.ndarray, mask: np.ndarray, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Augment one ``(D, H, W)`` image/mask pair reproducibly.

    Args:
        image: Standardised CT volume.
        mask: Binary lung mask of the same shape.
        cfg: Probabilities and strengths.
        seed: Per-sample seed; the same seed gives the same output.

    Returns:
        Float32 augmented image and binary float32 mask, same shape.
    """
    params = sample_params(cfg, np.random.default_rng(seed), image.shape)
    return apply(image, mask, params)
