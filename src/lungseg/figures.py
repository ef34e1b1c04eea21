"""Matplotlib figures (PNG, Agg backend): what people look at is drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from lungseg.io.geometry import Geometry  # noqa: E402

LUNG_WINDOW_HU = (-1350.0, 150.0)  # W 1500 / L -600
LABEL_COLOURS = {1: "tab:red", 2: "tab:cyan"}  # 1 = right lung, 2 = left lung


def _save(fig: plt.Figure, out_png: Path, title: str | None = None, dpi: int = 80, bottom: float = 0.0) -> Path:
    """Title, lay out (leaving ``bottom`` of the height free, e.g. for a legend), write and close a figure."""
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png


@dataclass(frozen=True)
class CaseView:
    """One case to draw: CT in HU and a label map on the same [i, j, k] grid."""

    name: str
    ct_hu: np.ndarray
    labels: np.ndarray
    geometry: Geometry


def to_lps_display(volume: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient a volume [i, j, k] so that i -> patient left, j -> posterior, k -> superior.

    Returns the reoriented array and its voxel spacing (mm) in the new axis order. Used
    only for display: an axial slice ``out[:, :, k].T`` is then in radiological view.
    """
    ornt = nib.orientations.io_orientation(geometry.affine_ras())
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    transform = nib.orientations.ornt_transform(ornt, target)
    out = nib.orientations.apply_orientation(volume, transform)
    spacing = np.empty(3)
    for src_axis, (dst_axis, _flip) in enumerate(transform):
        spacing[int(dst_axis)] = geometry.spacing_mm[src_axis]
    return out, (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _planes(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal 2D views of an LPS-display volume, ready for imshow(origin='lower')."""
    ci, cj, ck = centre
    axial = volume[:, ::-1, ck].T  # rows: anterior (top) -> posterior; flipped for origin='lower'
    coronal = volume[:, cj, :].T  # rows: inferior (bottom) -> superior
    sagittal = volume[ci, :, :].T  # columns: anterior -> posterior
    return [axial, coronal, sagittal]


def _display(case: CaseView) -> tuple[np.ndarray, np.ndarray, list[int], list[float]]:
    """CT and labels in display orientation, the voxel the three planes pass through (the lungs'
    centre; sagittal through the right lung, not the mediastinum) and the planes' aspect ratios."""
    ct, spacing = to_lps_display(case.ct_hu, case.geometry)
    lab, _ = to_lps_display(case.labels, case.geometry)
    idx = np.argwhere(lab > 0)
    centre = [int(v) for v in (idx.mean(axis=0) if len(idx) else np.array(ct.shape) // 2)]
    right = np.argwhere(lab == 1)
    if len(right):  # sagittal through the right lung, not the mediastinum
        centre[0] = int(right[:, 0].mean())
    aspects = [spacing[1] / spacing[0], spacing[2] / spacing[0], spacing[2] / spacing[1]]
    return ct, lab, centre, aspects


def plot_cases_three_planes(cases: list[CaseView], out_png: Path, title: str | None = None) -> Path:
    """Draw axial/coronal/sagittal slices through the lungs' centre with lung contours.

    One row per case; right lung (label 1) red, left lung (label 2) cyan; lung window.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(cases), 3, figsize=(12, 4 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        ct, lab, centre, aspects = _display(case)
        names = ["axial", "coronal", "sagittal"]
        for ax, img, msk, aspect, name in zip(row, _planes(ct, centre), _planes(lab, centre), aspects, names):
            ax.imshow(img, cmap="gray", vmin=LUNG_WINDOW_HU[0], vmax=LUNG_WINDOW_HU[1], origin="lower", aspect=aspect)
            for label, colour in LABEL_COLOURS.items():
                if np.any(msk == label):
                    ax.contour((msk == label).astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_title(f"{case.name} {name}", fontsize=9)
            ax.axis("off")
    return _save(fig, out_png, title)


THIRD_COLOURS = ("tab:blue", "tab:green", "tab:orange")  # upper, middle, lower third (lungseg.inference.densitometry)
LAA_COLOUR = "magenta"


def plot_lung_overlay(
    case: CaseView, thirds: np.ndarray, out_png: Path, title: str | None = None, laa_hu: float = -950.0
) -> Path:
    """What the densitometry counts, on three planes through the lungs: top row the lung ``thirds``
    (1 upper, 2 middle, 3 lower on the case's grid: :func:`lungseg.inference.densitometry.thirds_map`; drawn blue,
    green, orange) under the lung contours (right red, left cyan); bottom row the lung voxels below
    ``laa_hu`` (LAA-950) in magenta."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    ct, lab, centre, aspects = _display(case)
    thirds, _ = to_lps_display(np.asarray(thirds), case.geometry)
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    planes = zip(_planes(ct, centre), _planes(lab, centre), _planes(thirds, centre), aspects, ("axial", "coronal", "sagittal"))
    for col, (img, msk, third, aspect, name) in enumerate(planes):
        laa = (msk > 0) & (img < laa_hu)
        for row, (layer, cmap, alpha) in enumerate((
            (np.ma.masked_equal(third, 0), ListedColormap(list(THIRD_COLOURS)), 0.45),
            (np.ma.masked_equal(laa.astype(np.uint8), 0), ListedColormap([LAA_COLOUR]), 0.9),
        )):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=LUNG_WINDOW_HU[0], vmax=LUNG_WINDOW_HU[1], origin="lower", aspect=aspect)
            ax.imshow(layer, cmap=cmap, vmin=1 if row == 0 else 0.5, vmax=3 if row == 0 else 1.5, alpha=alpha,
                      origin="lower", aspect=aspect, interpolation="nearest")
            for label, colour in LABEL_COLOURS.items():
                if np.any(msk == label):
                    ax.contour((msk == label).astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_title(f"{case.name} {name}: " + ("thirds" if row == 0 else f"below {laa_hu:g} HU"), fontsize=9)
            ax.axis("off")
    handles = [Patch(color=c, label=f"{t} third") for c, t in zip(THIRD_COLOURS, ("upper", "middle", "lower"))]
    handles += [Patch(color=LAA_COLOUR, label=f"lung below {laa_hu:g} HU (LAA)"),
                Patch(color=LABEL_COLOURS[1], label="right lung"), Patch(color=LABEL_COLOURS[2], label="left lung")]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    return _save(fig, out_png, title, bottom=0.04)


def plot_augmentation(
    image: np.ndarray,
    mask: np.ndarray,
    aug_image: np.ndarray,
    aug_mask: np.ndarray,
    out_png: Path,
    title: str | None = None,
) -> Path:
    """Draw a volume before and after augmentation, like the paper's Fig. 2.

    Row 1 is the original, row 2 the augmented pair; columns are axial, coronal and
    sagittal slices of the network-grid arrays (canonical RAS axis order, radiological
    view, as :func:`plot_volume_planes`). Each index is the slice of the original mask
    with the most lung (the mid-slice when the mask is empty), so the sagittal view
    cuts a lung rather than the mediastinum; both rows use the same indices. The
    image is grey on a window shared by both rows (so intensity changes show), the
    mask a red contour.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    vmin, vmax = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    fig, axes = plt.subplots(2, 3, figsize=(10, 7), squeeze=False)
    rows = [("original", image, mask), ("augmented", aug_image, aug_mask)]
    index = []
    for axis in range(3):
        area = (np.asarray(mask) > 0.5).sum(axis=tuple(a for a in range(3) if a != axis))
        index.append(int(np.argmax(area)) if area.any() else mask.shape[axis] // 2)
    centre = (index[0], index[1], index[2])
    for row, (label, img, msk) in zip(axes, rows):
        names = ("axial", "coronal", "sagittal")
        for ax, name, im2d, m2d in zip(row, names, _grid_planes(img, centre), _grid_planes(msk, centre)):
            ax.imshow(im2d, cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
            if np.any(m2d > 0.5) and np.any(m2d <= 0.5):
                ax.contour(m2d.astype(float), levels=[0.5], colors="tab:red", linewidths=0.8)
            ax.set_title(f"{label} {name}", fontsize=9)
            ax.axis("off")
    return _save(fig, out_png, title)


def _grid_planes(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of a network-grid volume in canonical RAS order (axis 0
    toward the patient's right), in radiological view, ready for ``imshow(origin='lower')``."""
    ci, cj, ck = centre
    return [volume[::-1, :, ck].T, volume[::-1, cj, :].T, volume[ci, ::-1, :].T]


def _lung_centre(mask: np.ndarray) -> list[int]:
    """Slice indices through the lungs of a network-grid mask (canonical RAS): the mask's centroid,
    with the sagittal index through the right lung rather than the mediastinum (volume centre if empty)."""
    idx = np.argwhere(mask > 0)
    centre = [int(v) for v in (idx.mean(axis=0) if len(idx) else np.array(mask.shape) // 2)]
    right = idx[idx[:, 0] > mask.shape[0] // 2] if len(idx) else idx
    if len(right):
        centre[0] = int(right[:, 0].mean())
    return centre


def plot_volume_planes(image: np.ndarray, mask: np.ndarray, out_png: Path, title: str | None = None) -> Path:
    """The paper's Fig. 1: axial, coronal and sagittal slices of a network-grid image with its mask.

    ``image`` and ``mask`` are ``(D, H, W)`` in canonical RAS axis order (axis 0 toward the
    patient's right, 1 anterior, 2 superior); shown in radiological view.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    centre = _lung_centre(mask)
    fig, axes = plt.subplots(2, 3, figsize=(10, 7))
    for col, (img, msk, name) in enumerate(zip(_grid_planes(image, centre), _grid_planes(mask, centre),
                                               ("axial", "coronal", "sagittal"))):
        axes[0, col].imshow(img, cmap="gray", origin="lower")
        axes[0, col].set_title(f"image, {name}", fontsize=9)
        axes[1, col].imshow(img, cmap="gray", origin="lower")
        axes[1, col].imshow(np.ma.masked_where(msk == 0, msk), cmap="autumn", alpha=0.5, origin="lower")
        axes[1, col].set_title(f"mask overlay, {name}", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    return _save(fig, out_png, title)


def plot_prediction(
    image: np.ndarray, truth: np.ndarray, prob: np.ndarray, out_png: Path, title: str | None = None
) -> Path:
    """The paper's Fig. 6 for one case on the network grid: CT, ground truth, probability map,
    binary prediction (threshold 0.5) and an overlay (truth green, prediction red), one row per
    plane (axial, coronal, sagittal). Arrays are ``(D, H, W)`` in canonical RAS axis order."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    centre = _lung_centre(truth)
    pred = (prob > 0.5).astype(np.float32)
    planes = [_grid_planes(v, tuple(centre)) for v in (image, truth, prob, pred)]
    columns = ("CT", "ground truth", "probability", "prediction", "overlay")
    fig, axes = plt.subplots(3, 5, figsize=(15, 9))
    for row, plane in enumerate(("axial", "coronal", "sagittal")):
        img, tru, pr, bi = (p[row] for p in planes)
        axes[row, 0].imshow(img, cmap="gray", origin="lower")
        axes[row, 1].imshow(tru, cmap="gray", vmin=0, vmax=1, origin="lower")
        shown = axes[row, 2].imshow(pr, cmap="viridis", vmin=0, vmax=1, origin="lower")
        axes[row, 3].imshow(bi, cmap="gray", vmin=0, vmax=1, origin="lower")
        axes[row, 4].imshow(img, cmap="gray", origin="lower")
        for m, colour in ((tru, "tab:green"), (bi, "tab:red")):
            if np.any(m > 0.5) and np.any(m <= 0.5):
                axes[row, 4].contour(m.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
        for col, name in enumerate(columns):
            axes[row, col].set_title(f"{name}, {plane}", fontsize=9)
            axes[row, col].axis("off")
    fig.colorbar(shown, ax=axes[:, 2].tolist(), shrink=0.6)
    if title:
        fig.suptitle(title)
    fig.savefig(out_png, dpi=70)
    plt.close(fig)
    return out_png


def plot_training_curves(history: list[dict[str, float]], out_dir: Path) -> list[Path]:
    """The paper's Figs. 4 and 5: train/validation loss and Dice per epoch (two PNGs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in history]
    paths = []
    for key, label, name in (("loss", "Dice + BCE loss", "train_loss.png"), ("dice", "Dice (threshold 0.5)", "train_dice.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [r.get(key, np.nan) for r in history], label="train")
        ax.plot(epochs, [r.get(f"val_{key}", np.nan) for r in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out_dir / name, dpi=90))
    return paths


def plot_cv(fold_rows: dict[int, list[float]], out_png: Path, metric: str = "Dice (CT grid)") -> Path:
    """Cross-validation: each fold's per-case values as points, the fold mean as a bar, pooled mean dashed."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    folds = sorted(fold_rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(folds), 4))
    rng = np.random.default_rng(0)
    for x, fold in enumerate(folds):
        values = np.asarray(fold_rows[fold], dtype=float)
        if len(values):
            ax.bar(x, values.mean(), width=0.6, color="tab:blue", alpha=0.3)
            ax.scatter(x + rng.uniform(-0.15, 0.15, len(values)), values, s=14, color="tab:blue")
    pooled = [v for fold in folds for v in fold_rows[fold]]
    if pooled:
        ax.axhline(float(np.mean(pooled)), ls="--", color="k", lw=1, label=f"pooled mean {np.mean(pooled):.4f}")
        lo = min(pooled)
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(folds)), [f"fold {f}" for f in folds])
    ax.set_ylabel(metric)
    return _save(fig, out_png, f"{len(folds)}-fold cross-validation: per test case")
