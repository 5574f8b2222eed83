"""The benchmarked zoo models written in `flax.linen`, layer for layer the same networks as `jaxcnn.models`.

    python -m jaxcnn.bench.flax_models      # prints each model's parameter count next to jaxcnn's

Same layer sizes, explicit paddings (lenet5/fashion_cnn: 2 on each side of the 5x5 convolutions, the
3x3 convolutions of resnet20/mobilenet_small: 1, the 1x1 shortcuts: none), 2x2 max pools, batch-norm
placement and residual shortcuts (resnet20: jaxcnn's default ``shortcut="conv"``, a strided 1x1
convolution + BN). Channels-last, flatten in (H, W, C) order as jaxcnn's. Kernels are initialised as
jaxcnn's (untruncated He normal, ``N(0, 2 / fan_in)``; zero biases); batch norm uses jaxcnn's momentum
(0.9, the weight of the old running value) and epsilon (1e-5). One difference that does not change the
computation of a training step: Flax feeds the running variance the biased batch variance, jaxcnn (like
PyTorch) the unbiased one.

`params_from_jaxcnn` converts a jaxcnn parameter/state pytree into Flax variables, so the forward
outputs can be compared (tests/test_benchmarks_smoke.py) and every implementation benchmarked from the
same parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcnn.models.mobilenet import MOBILENET_SMALL
from jaxcnn.models.torchvision import named_layers

from ..errors import ConfigError

__all__ = ["LeNet5", "FashionCNN", "ResNet20", "MobileNetSmall", "FLAX_TWINS", "make", "params_from_jaxcnn"]

# jaxcnn's "he_normal": N(0, 2 / fan_in), untruncated; fan_in = prod(window) * in_channels_per_group.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _conv(features: int, kernel: int, *, stride: int = 1, pad: int = 0, groups: int = 1, bias: bool = True):
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=bias,
        kernel_init=he_normal,
    )


def _dense(features: int):
    return nn.Dense(features, kernel_init=he_normal)


def _batch_norm(train: bool):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


def _max_pool_2x2(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class LeNet5(nn.Module):
    """conv 6@5x5 pad 2 -> relu -> pool 2 -> conv 16@5x5 -> relu -> pool 2 -> 120 -> 84 -> classes."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _max_pool_2x2(nn.relu(_conv(6, 5, pad=2)(x)))
        x = _max_pool_2x2(nn.relu(_conv(16, 5)(x)))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(_dense(120)(x))
        x = nn.relu(_dense(84)(x))
        return _dense(self.num_classes)(x)


class FashionCNN(nn.Module):
    """conv 32@5x5 pad 2 -> relu -> pool 2 -> conv 64@5x5 pad 2 -> relu -> pool 2 -> 1024 -> dropout -> classes."""

    num_classes: int = 10
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _max_pool_2x2(nn.relu(_conv(32, 5, pad=2)(x)))
        x = _max_pool_2x2(nn.relu(_conv(64, 5, pad=2)(x)))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(_dense(1024)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return _dense(self.num_classes)(x)


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> relu -> conv3x3 -> BN, + shortcut (identity or 1x1 strided conv + BN), relu."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_batch_norm(train)(_conv(self.features, 3, stride=self.stride, pad=1, bias=False)(x)))
        y = _batch_norm(train)(_conv(self.features, 3, pad=1, bias=False)(y))
        if self.stride == 1 and x.shape[-1] == self.features:
            shortcut = x
        else:
            shortcut = _batch_norm(train)(_conv(self.features, 1, stride=self.stride, bias=False)(x))
        return nn.relu(y + shortcut)


class ResNet20(nn.Module):
    """conv3x3 16 -> BN -> relu, three stages of 3 basic blocks (16, 32, 64; stride 2 entering stages 2
    and 3), global average pool, dense."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_batch_norm(train)(_conv(16, 3, pad=1, bias=False)(x)))
        for stage, features in enumerate((16, 32, 64)):
            for block in range(3):
                x = BasicBlock(features, stride=2 if stage > 0 and block == 0 else 1)(x, train)
        return _dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class MobileNetSmall(nn.Module):
    """conv3x3 16 -> BN -> relu, five depthwise-separable blocks, global average pool, dense."""

    num_classes: int = 10
    blocks: tuple[tuple[int, int], ...] = MOBILENET_SMALL

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_batch_norm(train)(_conv(16, 3, pad=1, bias=False)(x)))
        for features, stride in self.blocks:
            channels = x.shape[-1]
            x = _conv(channels, 3, stride=stride, pad=1, groups=channels, bias=False)(x)
            x = nn.relu(_batch_norm(train)(x))
            x = nn.relu(_batch_norm(train)(_conv(features, 1, bias=False)(x)))
        return _dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


FLAX_TWINS: dict[str, Callable[[], nn.Module]] = {
    "lenet5": LeNet5,
    "fashion_cnn": FashionCNN,
    "resnet20": ResNet20,
    "mobilenet_small": MobileNetSmall,
}


def make(name: str) -> nn.Module:
    """The Flax twin of ``jaxcnn.models.<name>()`` (10 classes)."""
    return FLAX_TWINS[name]()


_RENAME = {"offset": "bias"}  # jaxcnn's batch-norm shift is Flax's "bias"; every other name agrees


def _convert(template: Any, jaxcnn_tree: Any) -> Any:
    """``template`` (a Flax collection) with its leaves replaced by jaxcnn's, matched by execution order."""
    sources, targets = list(named_layers(jaxcnn_tree).values()), list(named_layers(template).values())
    if len(sources) != len(targets):
        raise ConfigError(f"jaxcnn has {len(sources)} parameterised layers, the Flax model {len(targets)}")
    replaced = {id(t): {_RENAME.get(k, k): v for k, v in s.items()} for s, t in zip(sources, targets)}

    def rebuild(node):
        if id(node) in replaced:
            new = replaced[id(node)]
            for key, value in node.items():
                if key not in new or np.shape(new[key]) != np.shape(value):
                    raise ConfigError(f"Flax leaf {key} {np.shape(value)} has no jaxcnn counterpart of that shape")
            return {key: jnp.asarray(new[key]) for key in node}
        return {key: rebuild(child) for key, child in node.items()}

    return rebuild(template)


def params_from_jaxcnn(variables: dict, params: Any, state: Any) -> dict:
    """Flax ``variables`` (from ``module.init``) carrying jaxcnn's ``params`` and batch-norm ``state``."""
    out = {"params": _convert(variables["params"], params)}
    if "batch_stats" in variables:
        out["batch_stats"] = _convert(variables["batch_stats"], state)
    return out


def main() -> int:
    import jax

    from jaxcnn import models

    from .twins import BENCHMARKED

    for name, module in FLAX_TWINS.items():
        shape, factory = BENCHMARKED[name]
        _, params, _ = factory().init(jax.random.PRNGKey(0), (2, *shape))
        variables = module().init(jax.random.PRNGKey(0), jnp.zeros((2, *shape)), train=False)
        flax_count, jaxcnn_count = models.count_params(variables["params"]), models.count_params(params)
        print(f"{name:16s} flax {flax_count:>10,}  jaxcnn {jaxcnn_count:>10,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
