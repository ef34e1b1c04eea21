"""ONNX Runtime for inference: the same network without importing TensorFlow.

Why: ``import tensorflow`` takes about 4.4 s on a 2-core host, most of a single-scan
``lungseg predict`` (measured, see the README). A model bundle therefore carries, beside each
``.keras`` network, the same network exported to ONNX (``model.onnx``, ``refine.onnx``; written
by :func:`export_onnx` when the bundle is written). ONNX Runtime imports and loads it in about
0.1 s and computes the same probabilities (max abs difference ~1e-7 on the default model);
``tests/unit/nn/test_onnx_model.py`` checks that the masks are identical to Keras'. Training stays
in Keras; without ``onnxruntime`` installed or without the ``.onnx`` file, Keras is used.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

SUFFIX = ".onnx"


def available() -> bool:
    """True when ``onnxruntime`` can be imported."""
    return importlib.util.find_spec("onnxruntime") is not None


def export_onnx(keras_path: str | Path, onnx_path: str | Path, sample_size: int = 32) -> Path:
    """Export a ``.keras`` network to ONNX at ``onnx_path`` (written atomically).

    Args:
        keras_path: The Keras model file.
        onnx_path: Where the ONNX file goes.
        sample_size: Edge of the zero cube used to trace a fully convolutional model whose
            spatial input dims are None (must be divisible by ``2**depth``).
    """
    from lungseg.fileio import atomic_write
    from lungseg.nn.model import load_keras_model

    model = load_keras_model(keras_path)
    shape = [1] + [s if s is not None else sample_size for s in model.input_shape[1:4]] + [model.input_shape[-1]]
    model(np.zeros(shape, dtype=np.float32), training=False)  # Keras exports only a model that was called
    with atomic_write(onnx_path, suffix=SUFFIX) as tmp:
        model.export(str(tmp), format="onnx", verbose=False)
    return Path(onnx_path)


class OnnxModel:
    """A loaded ONNX network, called like the Keras model it came from.

    ``model(x, training=False)`` maps a float32 batch ``(N, D, H, W, C)`` to probabilities
    ``(N, D, H, W, 1)`` (numpy); ``input_shape`` is ``(None, D, H, W, C)`` with None for
    dynamic dims, as Keras reports it.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = (None, *(d if isinstance(d, int) else None for d in inp.shape[1:]))

    def __call__(self, x: Any, training: bool = False) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.asarray(x, dtype=np.float32)})[0]
