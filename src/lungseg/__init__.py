"""lungseg: experiment-tracked 3D lung segmentation of chest CT."""

from __future__ import annotations

from lungseg.nn.runtime import set_tensorflow_env

__version__ = "0.1.0"

set_tensorflow_env()  # before anything imports TensorFlow: see lungseg.nn.runtime
