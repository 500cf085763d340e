"""Every installed plugin's models pass the conformance suite (third-party ones included)."""

from __future__ import annotations

import pytest

from pathseg_core.plugins import registry
from pathseg_core.testing.conformance import check_model


@pytest.mark.parametrize("name", registry().names())
def test_registered_model_conforms(name, tmp_path):
    metrics = check_model(name, tmp_path)
    assert "train_loss" in metrics
