"""XLA:CPU's route: which compiler emits the convolutions and matrix products of a CPU run.

jaxlib 0.10 hands every convolution XLA:CPU compiles to YNNPACK unless ``XLA_FLAGS`` says otherwise; XLA's
own emitter ran fashion_cnn's 5x5 32->64 convolution 1.8x faster and its training step 1.2x faster on this
project's machine (``benchmarks/NOTES.md``, "XLA:CPU's convolution routes"). YNNPACK's matrix products,
on the other hand, beat XLA's: handing YNNPACK the dots alone (``individual_dot``) and leaving the
convolutions to XLA's emitter ran fashion_cnn's training step 1.25x faster than XLA's emitter for both
(74-76 ms against 93-95, float32, batch 128) and resnet20's and lenet5's as fast (``python -m
jaxcnn.bench.cpu_routes --routes xla ynn-dot``; NOTES, "The CLI's route"). Handing YNNPACK the reductions
too (``reduce``) took the bias gradients and batch-norm sums away from XLA's slow ``reduce-window`` loops
(one bias gradient 11.7 ms against 1.1, in XLA's profile of fashion_cnn's step): fashion_cnn's CLI step
ran 8-9% faster in both rounds, resnet20's 6% faster in one and even in the other, lenet5's 4-15% slower
(``--routes ynn-dot ynn-dot-reduce``; NOTES, "The CLI's route, second step"). ``jaxcnn train`` and ``jaxcnn
eval`` therefore start JAX with :data:`XLA_CPU_CONVOLUTIONS`; a script can call
:func:`prefer_xla_cpu_convolutions` first thing too. GPU and TPU backends ignore the flag.

XLA reads its flags once, when JAX starts its backend, so the choice must come first. Whether the backend
has started is asked of ``jax._src.xla_bridge.backends_are_initialized``: JAX has no public function for
it (``jax.extend.backend`` can list or start backends, not say whether they have started); should that
private function disappear, the route is left alone rather than guessed at.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "XLA_CPU_CONVOLUTIONS",
    "XLA_CPU_ROUTES",
    "prefer_xla_cpu_convolutions",
    "backend_started",
    "convolution_route",
]

# YNNPACK fuses the matrix products and the reductions: XLA emits the convolutions itself (and the rest).
XLA_CPU_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"
# The route per compute dtype. bfloat16 gets an empty list (XLA's emitter for everything): with YNNPACK's
# matrix products, XLA:CPU refused resnet20's bfloat16 step ("Unsupported element type for
# DotThunk::Execute: BF16 x BF16 = F32", a product accumulating in float32 that YNNPACK did not take).
XLA_CPU_ROUTES = {"float32": XLA_CPU_CONVOLUTIONS, "bfloat16": "--xla_cpu_experimental_ynn_fusion_type="}


def convolution_route() -> str:
    """Which compiler this process's ``XLA_FLAGS`` give XLA:CPU's convolutions: ``"xla"`` (XLA's own
    emitter: a YNNPACK fusion list without convolutions, as ``jaxcnn train`` sets it) or ``"ynnpack"``
    (this jaxlib's default, or a list that names them). The formulations read it at trace time (the
    route is fixed when the backend starts), so each route gets the thresholds measured under it."""
    flags = os.environ.get("XLA_FLAGS", "")
    match = re.search(r"--xla_cpu_experimental_ynn_fusion_type=(\S*)", flags)
    return "xla" if match is not None and "convolution" not in match.group(1) else "ynnpack"


def backend_started() -> bool:
    """Whether JAX has started a backend in this process (after which XLA_FLAGS are read no more); True
    when that cannot be told."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())


def prefer_xla_cpu_convolutions(dtype: str = "float32") -> bool:
    """Add the route for compute dtype ``dtype`` (:data:`XLA_CPU_ROUTES`; float32's is
    :data:`XLA_CPU_CONVOLUTIONS`) to ``XLA_FLAGS`` for this process; True if it was added.

    Nothing is changed when ``JAXCNN_CPU_CONVOLUTIONS=jaxlib`` (keep the jaxlib's default route), when
    ``XLA_FLAGS`` already says where YNNPACK goes, when the backend has started, or with a jaxlib other than
    the 0.10 series it was measured with (an XLA that does not know a flag refuses to start).
    """
    import jaxlib.version

    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXCNN_CPU_CONVOLUTIONS") == "jaxlib" or "ynn_fusion_type" in flags:
        return False
    if not jaxlib.version.__version__.startswith("0.10.") or backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_ROUTES.get(dtype, XLA_CPU_CONVOLUTIONS)}".strip()
    return True
