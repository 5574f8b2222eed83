"""Test configuration: two tiers, float64 by default, quick compiles, and the sweep width.

- **Tiers.** ``python -m pytest -n 2`` runs the default tier (every op against its reference and finite
  differences on a representative sweep, every layer, the small models, the data parsers, the CLI's
  refusals, one short training run): a few minutes on a 2-core CPU. Tests marked ``slow`` (training to
  accuracy, subprocess kills, multi-process runs, 224x224 networks, the benchmark smoke runs) run with
  ``-m slow``, together with the property-based sweeps at their wide setting. CI runs both. A test
  named by its id (``pytest tests/test_x.py::test_y``) runs whatever its tier.
- **Sweeps.** Every hypothesis test runs ``JAXCNN_HYPOTHESIS_EXAMPLES`` examples (default 8) in the
  default tier and ``JAXCNN_HYPOTHESIS_WIDE`` (default 120) when the run selects ``slow``, as JAX's own
  suite runs ``JAX_NUM_GENERATED_CASES`` cases by default and many more in CI.
- **float64.** Tests run in float64 unless an array is made float32/bfloat16 on purpose (gradients to 1e-10).
- **Compiles.** XLA compiles for these tests at backend optimisation level 0 (``XLA_FLAGS``): the tests
  measure values, never speed, and most of their time is compilation, which this halves. Set
  ``JAXCNN_TEST_XLA_OPT=default`` to test with XLA's default optimisation. Subprocesses inherit it.
- **Optional inputs.** Tests that need Debian's Fashion-MNIST, scikit-learn or torch skip without them,
  unless ``JAXCNN_REQUIRE_DATA=1`` (datasets) or ``JAXCNN_REQUIRE_TORCH=1`` (torch and torchvision) is
  set, as ``.ci/run`` does: then a missing one fails.
"""

import os

if os.environ.get("JAXCNN_TEST_XLA_OPT") != "default":  # before JAX starts its backend
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)


# Each hypothesis example compiles fresh shapes: no deadline, a bounded number of examples.
for _profile, _variable, _default in (
    ("default", "JAXCNN_HYPOTHESIS_EXAMPLES", 8),
    ("wide", "JAXCNN_HYPOTHESIS_WIDE", 120),
):
    settings.register_profile(
        f"jaxcnn-{_profile}",
        deadline=None,
        max_examples=int(os.environ.get(_variable, _default)),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


def _selects_slow(config) -> bool:
    """The run asks for the slow tier (``-m slow``, ``-m "slow and ..."``), not against it."""
    expression = config.getoption("markexpr") or ""
    return "slow" in expression and "not slow" not in expression


def pytest_configure(config):
    # before the test modules are imported: @given reads the profile when it decorates
    settings.load_profile("jaxcnn-wide" if _selects_slow(config) else "jaxcnn-default")


def _names_tests(config) -> bool:
    """The command line names tests by id (``tests/test_x.py::test_y``): they run whatever their tier."""
    return any("::" in str(arg) for arg in config.args)


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config, items):
    """A slow run re-runs every property-based sweep at its wide setting; a run without ``-m`` is the
    default tier, which leaves the ``slow`` tests out (as ``-m "not slow"`` would)."""
    if _selects_slow(config):
        for item in items:
            if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.slow)
    elif not config.getoption("markexpr") and not _names_tests(config):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
