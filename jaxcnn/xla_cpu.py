"""XLA:CPU's convolution route: which compiler emits the convolutions of a CPU run.

jaxlib 0.10 hands every convolution XLA:CPU compiles to YNNPACK unless ``XLA_FLAGS`` says otherwise; XLA's
own emitter ran fashion_cnn's 5x5 32->64 convolution 1.8x faster and its training step 1.2x faster on this
project's machine (``benchmarks/NOTES.md``, "XLA:CPU's convolution routes"; ``python -m
jaxcnn.bench.cpu_routes`` measures both). ``jaxcnn train`` and ``jaxcnn eval`` therefore start JAX with
:data:`XLA_CPU_CONVOLUTIONS` (XLA's own emitter); a script can call :func:`prefer_xla_cpu_convolutions`
first thing too. GPU and TPU backends ignore the flag.

XLA reads its flags once, when JAX starts its backend, so the choice must come first. Whether the backend
has started is asked of ``jax._src.xla_bridge.backends_are_initialized``: JAX has no public function for
it (``jax.extend.backend`` can list or start backends, not say whether they have started); should that
private function disappear, the route is left alone rather than guessed at.
"""

from __future__ import annotations

import os

__all__ = ["XLA_CPU_CONVOLUTIONS", "prefer_xla_cpu_convolutions", "backend_started"]

# An empty list of YNNPACK fusion types: no convolution goes to YNNPACK, XLA emits them itself.
XLA_CPU_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type="


def backend_started() -> bool:
    """Whether JAX has started a backend in this process (after which XLA_FLAGS are read no more); True
    when that cannot be told."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())


def prefer_xla_cpu_convolutions() -> bool:
    """Add :data:`XLA_CPU_CONVOLUTIONS` to ``XLA_FLAGS`` for this process; True if it was added.

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
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_CONVOLUTIONS}".strip()
    return True
