"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.models import save_tiny_unet


@pytest.fixture(scope="module")
def tiny_keras(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-filter, one-level U-Net (seed 0) saved as ``.keras``, for the input shape of the test
    module's ``PRE`` (its PreprocessConfig)."""
    return save_tiny_unet(tmp_path_factory.mktemp("model") / "model.keras", request.module.PRE.shape)
