"""lungseg: experiment-tracked 3D lung segmentation of chest CT."""

from __future__ import annotations

from lungseg.runtime import set_tensorflow_env

__version__ = "0.1.0"

set_tensorflow_env()  # before anything imports TensorFlow: see lungseg.runtime
