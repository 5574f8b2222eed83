"""A convolutional autoencoder for ``(N, 28, 28, C)`` images: strided convolutions down, transposed
convolutions up::

    encoder: conv 16@3x3 stride 2 pad 1 -> relu -> conv 32@3x3 stride 2 pad 1 -> relu   28 -> 14 -> 7
    decoder: convT 16@3x3 stride 2 pad 1 out_pad 1 -> relu
             -> convT C@3x3 stride 2 pad 1 out_pad 1 -> sigmoid                           7 -> 14 -> 28

(PyTorch's ``padding=1, output_padding=1`` makes each transposed convolution exactly double the size.)
The output is in ``(0, 1)``, like pixel intensities; train with ``losses.mse`` against the input.
9,569 parameters for one channel (160 + 4,640 + 4,624 + 145). Any input whose spatial sizes are
multiples of 4 is reconstructed at its own size.
"""

from typing import Any

from .. import ops as _ops
from ..combinators import serial
from ..errors import ConfigError
from ..layers import Layer, bind

__all__ = ["conv_autoencoder"]


def conv_autoencoder(channels: int = 1, features: tuple[int, int] = (16, 32), *, ops: Any = _ops) -> Layer:
    """``serial(encoder, decoder)`` mapping ``(N, H, W, channels)`` to the same shape, in ``(0, 1)``.

    ``params[0]`` / ``state[0]`` belong to the encoder (output ``(N, H/4, W/4, features[1])``),
    ``params[1]`` / ``state[1]`` to the decoder."""
    if not (isinstance(features, tuple) and len(features) == 2):
        raise ConfigError(f"features must be a pair of channel counts (f1, f2), got {features!r}")
    L = bind(ops)
    f1, f2 = features
    encoder = serial(
        L.Conv(f1, (3, 3), stride=2, padding=1),
        L.Relu,
        L.Conv(f2, (3, 3), stride=2, padding=1),
        L.Relu,
    )
    decoder = serial(
        L.ConvTranspose(f1, (3, 3), stride=2, padding=1, output_padding=1),
        L.Relu,
        L.ConvTranspose(channels, (3, 3), stride=2, padding=1, output_padding=1),
        L.Sigmoid,
    )
    return serial(encoder, decoder)
