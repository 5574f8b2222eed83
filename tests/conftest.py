"""Tests run in float64 unless an array is made float32/bfloat16 on purpose (gradients to 1e-10)."""

import os

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

# Each hypothesis example compiles fresh shapes: no deadline, a bounded number of examples.
settings.register_profile(
    "jaxcnn",
    deadline=None,
    max_examples=int(os.environ.get("JAXCNN_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("jaxcnn")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
