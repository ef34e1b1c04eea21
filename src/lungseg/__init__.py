"""lungseg: experiment-tracked 3D lung segmentation of chest CT."""

from __future__ import annotations

__version__ = "0.1.0"
