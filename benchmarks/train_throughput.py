"""Training throughput: model alone vs. fed by the real augmented input pipeline.

Prints ``name: value`` lines: the host (CPU model, cores, SIMD flags, oneDNN settings), the
model-only training volumes/s on one fixed batch (median step of ``train_on_batch``), volumes/s with the augmented tf.data
pipeline, their ratio, the model's achieved GFLOP/s, a numpy float32 matmul GFLOP/s measured
in the same run and the model's fraction of it. To see an AVX-512 host as an AVX2-only one
would run it, set ``ONEDNN_MAX_CPU_ISA=AVX2`` (TensorFlow's oneDNN kernels) and
``OPENBLAS_CORETYPE=Haswell`` (numpy's OpenBLAS kernels, so the ratio compares like with like); ``TF_ENABLE_ONEDNN_OPTS=0`` shows TensorFlow's
Eigen fallback (``lungseg.nn.runtime`` turns oneDNN on by default). Uses data/processed/train when present,
otherwise random volumes of ``preprocess.shape``. The augmentation is what ``train`` uses:
``augment`` from the params file with ``reports/tune/best_params.json`` laid over it when that
exists (``--params-only`` to ignore it). The pipeline timing starts a fresh iterator, so enough steps
are needed for its start to be amortised (about 10 s at 12 steps is not). For the native figure make
sure ``OPENBLAS_CORETYPE`` is not inherited from the environment (``host_openblas_coretype`` shows it):
``Haswell`` on an AVX-512 host halves numpy's matmul and so doubles the fraction.

    python benchmarks/train_throughput.py [--params params.yaml] [--steps 20] [--params-only]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lungseg.config import load_params  # noqa: E402  (first: lungseg sets TensorFlow's env before its import)
from lungseg.nn.model import build_unet3d  # noqa: E402
from lungseg.nn.runtime import configure_threads, host_description  # noqa: E402
from lungseg.training.dataset import SplitArrays, load_split, train_dataset  # noqa: E402
from lungseg.training.fit import compile_model  # noqa: E402
from lungseg.training.tuning import overlay_best_params  # noqa: E402


def forward_flops(model: tf.keras.Model) -> float:
    """Multiply-adds x 2 of the conv and transposed-conv layers for one volume."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv3DTranspose)):  # SlabGradConv3D too
            transposed = isinstance(layer, keras.layers.Conv3DTranspose)
            cin = layer.input.shape[-1]
            k = float(np.prod(layer.kernel_size))
            voxels = float(np.prod((layer.input if transposed else layer.output).shape[1:4]))
            total += 2.0 * k * cin * layer.filters * voxels
    return total


def matmul_gflops(n: int = 2048, repeats: int = 5, rounds: int = 3) -> float:
    """Best of ``rounds`` timings of ``repeats`` float32 ``n x n`` matmuls (a brief load elsewhere
    on a 2-core host otherwise halves the figure)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2.0 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def volumes_per_second(model: tf.keras.Model, ds: tf.data.Dataset, steps: int, batch: int) -> float:
    """``model.fit`` fed by ``ds``: volumes per second over ``steps`` steps after a 4-step warm-up."""
    model.fit(ds, steps_per_epoch=4, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def model_only_volumes_per_second(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, steps: int) -> float:
    """The model alone: ``train_on_batch`` on one fixed batch, volumes per second from the median step
    after a 4-step warm-up. (``fit`` on a preloaded ``Dataset.from_tensors(...).repeat()`` read exactly
    3.908 volumes/s whenever a step took more than about 0.9 s, whatever the model: a stall in that
    path, not the model.)"""
    for _ in range(4):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return len(x) / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--steps", type=int, default=20, help="timed steps (model alone: their median)")
    ap.add_argument("--params-only", action="store_true", help="augment values of the params file, without tune's")
    args = ap.parse_args()
    params = load_params(args.params)
    aug, tuned = (params.augment, {}) if args.params_only else overlay_best_params(params.augment)
    configure_threads()
    shape, batch = params.preprocess.shape, params.train.batch_size
    try:
        data = load_split(Path(params.data.processed_dir), "train")
        source = "data/processed/train"
    except Exception:  # noqa: BLE001 - benchmark falls back to random data
        rng = np.random.default_rng(0)
        images = rng.normal(size=(8, *shape)).astype(np.float32)
        data = SplitArrays(images, (images > 0.5).astype(np.uint8), [str(i) for i in range(8)])
        source = "random"
    mp = params.model
    model = compile_model(build_unet3d(shape, mp.base_filters, mp.depth, mp.dropout, mp.l2, mp.bn_momentum), params.train)

    x = np.ascontiguousarray(data.images[:batch, ..., None], dtype=np.float32)
    y = np.ascontiguousarray(data.masks[:batch, ..., None], dtype=np.float32)
    model_only = model_only_volumes_per_second(model, x, y, args.steps)
    piped = volumes_per_second(model, train_dataset(data, aug, batch, seed=0), args.steps, batch)
    train_flops = 3.0 * forward_flops(model)  # forward + backward ~ 3x forward
    for key, value in host_description().items():
        print(f"host_{key}: {value}")
    print(f"host_openblas_coretype: {os.environ.get('OPENBLAS_CORETYPE', '(not set)')}")
    from lungseg.nn.model import _slab_enabled

    print(f"slab_kernel_gradient: {_slab_enabled()} (LUNGSEG_SLAB_GRAD={os.environ.get('LUNGSEG_SLAB_GRAD', 'auto')})")
    print(f"data: {source}")
    print(f"shape: {'x'.join(map(str, shape))}")
    print(f"batch_size: {batch}")
    print(f"base_filters: {mp.base_filters}")
    print(f"augment_source: {'tune (reports/tune/best_params.json)' if tuned else 'params'}")
    print(f"model_only_volumes_per_s: {model_only:.3f}")
    print(f"pipeline_volumes_per_s: {piped:.3f}")
    print(f"pipeline_ratio: {piped / model_only:.3f}")
    print(f"model_train_gflop_per_volume: {train_flops / 1e9:.2f}")
    model_gflops, numpy_gflops = model_only * train_flops / 1e9, matmul_gflops()
    print(f"model_gflops: {model_gflops:.1f}")
    print(f"numpy_matmul_gflops: {numpy_gflops:.1f}")
    print(f"model_fraction_of_matmul: {model_gflops / numpy_gflops:.2f}")


if __name__ == "__main__":
    main()
