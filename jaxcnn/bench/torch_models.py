"""The benchmarked zoo models written in PyTorch (eager, CPU), layer for layer the same networks as `jaxcnn.models`.

    python -m jaxcnn.bench.torch_models      # prints each model's parameter count next to jaxcnn's

Needs ``torch`` (``pip install torch==2.13.0``, the ``bench`` extra); everything else in `jaxcnn.bench` runs
without it. Same layer sizes, paddings (lenet5/fashion_cnn: 2 on each side of the 5x5 convolutions,
the 3x3 convolutions of resnet20/mobilenet_small: 1, the 1x1 shortcuts: none), 2x2 max pools,
batch-norm placement and residual shortcuts (resnet20: jaxcnn's default ``shortcut="conv"``, a strided
1x1 convolution + BN). Kernels are initialised as jaxcnn's (``kaiming_normal_``, fan-in, ReLU gain:
``N(0, 2 / fan_in)``; zero biases); batch norm has momentum 0.1 (PyTorch's convention for jaxcnn's 0.9)
and epsilon 1e-5.

PyTorch is channels-first: models take ``(N, C, H, W)`` and flatten in (C, H, W) order, the idiomatic
layout; `load_jaxcnn_params` permutes the first dense layer's rows accordingly, so with jaxcnn's
parameters the outputs agree. ``model.to(memory_format=torch.channels_last)`` gives the channels-last
variant that the model benchmark times as well.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from jaxcnn.models.mobilenet import MOBILENET_SMALL
from jaxcnn.models.torchvision import named_layers, to_torch_layout

from ..errors import ConfigError

__all__ = ["LeNet5", "FashionCNN", "ResNet20", "MobileNetSmall", "TORCH_TWINS", "make", "load_jaxcnn_params"]


def _init(module: nn.Module) -> nn.Module:
    """jaxcnn's defaults: He-normal kernels (fan-in), zero biases; batch norm keeps scale 1, shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class LeNet5(nn.Module):
    """conv 6@5x5 pad 2 -> relu -> pool 2 -> conv 16@5x5 -> relu -> pool 2 -> 120 -> 84 -> classes."""

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10):
        super().__init__()
        h, w, c = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten_chw = (16, (h // 2 - 4) // 2, (w // 2 - 4) // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(int(np.prod(self.flatten_chw)), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )
        _init(self)

    def forward(self, x):
        return self.classifier(self.features(x))


class FashionCNN(nn.Module):
    """conv 32@5x5 pad 2 -> relu -> pool 2 -> conv 64@5x5 pad 2 -> relu -> pool 2 -> 1024 -> dropout -> classes."""

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        h, w, c = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten_chw = (64, h // 4, w // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(int(np.prod(self.flatten_chw)), 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(1024, num_classes),
        )
        _init(self)

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> relu -> conv3x3 -> BN, + shortcut (identity or 1x1 strided conv + BN), relu."""

    def __init__(self, in_features: int, features: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, features, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _batch_norm(features)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=False)
        self.bn2 = _batch_norm(features)
        if stride == 1 and in_features == features:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_features, features, 1, stride=stride, bias=False), _batch_norm(features)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    """conv3x3 16 -> BN -> relu, three stages of 3 basic blocks (16, 32, 64; stride 2 entering stages 2
    and 3), global average pool, dense."""

    def __init__(self, input_shape=(32, 32, 3), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_shape[-1], 16, 3, padding=1, bias=False), _batch_norm(16), nn.ReLU()]
        in_features = 16
        for stage, features in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(BasicBlock(in_features, features, stride=2 if stage > 0 and block == 0 else 1))
                in_features = features
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        _init(self)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class MobileNetSmall(nn.Module):
    """conv3x3 16 -> BN -> relu, five depthwise-separable blocks, global average pool, dense."""

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, blocks=MOBILENET_SMALL):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_shape[-1], 16, 3, padding=1, bias=False), _batch_norm(16), nn.ReLU()]
        channels = 16
        for features, stride in blocks:
            layers += [
                nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
                _batch_norm(channels),
                nn.ReLU(),
                nn.Conv2d(channels, features, 1, bias=False),
                _batch_norm(features),
                nn.ReLU(),
            ]
            channels = features
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        _init(self)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


TORCH_TWINS = {"lenet5": LeNet5, "fashion_cnn": FashionCNN, "resnet20": ResNet20, "mobilenet_small": MobileNetSmall}


def make(name: str, input_shape) -> nn.Module:
    """The PyTorch twin of ``jaxcnn.models.<name>()`` for channels-last ``input_shape`` ``(H, W, C)``."""
    return TORCH_TWINS[name](tuple(input_shape))


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


@torch.no_grad()
def load_jaxcnn_params(model: nn.Module, params: Any, state: Any) -> nn.Module:
    """Copy jaxcnn's ``params`` and batch-norm ``state`` into ``model`` (in place), layer by layer in
    execution order (modules are registered in that order), each array in PyTorch's layout
    (:func:`jaxcnn.models.torchvision.to_torch_layout`: kernels ``(out, in, *window)``, the dense layer after
    a flatten with its rows in PyTorch's (C, H, W) order)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    sources, states = list(named_layers(params).values()), list(named_layers(state).values())
    if len(sources) != len(layers):
        raise ConfigError(f"jaxcnn has {len(sources)} parameterised layers, the PyTorch model {len(layers)}")
    flatten_chw = getattr(model, "flatten_chw", None)
    first_dense = True
    for module, source in zip(layers, sources):
        if isinstance(module, nn.BatchNorm2d):
            running = states.pop(0)
            for target, value in ((module.weight, source["scale"]), (module.bias, source["offset"])):
                target.copy_(_tensor(value))
            module.running_mean.copy_(_tensor(running["mean"]))
            module.running_var.copy_(_tensor(running["var"]))
            continue
        chw = flatten_chw if isinstance(module, nn.Linear) and first_dense else None
        first_dense = first_dense and not isinstance(module, nn.Linear)
        kernel = to_torch_layout(np.asarray(source["kernel"], np.float32), chw)
        if tuple(kernel.shape) != tuple(module.weight.shape):
            raise ConfigError(f"jaxcnn kernel {kernel.shape} does not fit {module} weight {tuple(module.weight.shape)}")
        module.weight.copy_(_tensor(kernel))
        if module.bias is not None:
            module.bias.copy_(_tensor(source["bias"]))
    return model


def main() -> int:
    import jax

    from jaxcnn import models

    from .twins import BENCHMARKED

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in TORCH_TWINS:
        shape, factory = BENCHMARKED[name]
        _, params, _ = factory().init(jax.random.PRNGKey(0), (2, *shape))
        count = sum(p.numel() for p in make(name, shape).parameters())
        print(f"{name:16s} torch {count:>10,}  jaxcnn {models.count_params(params):>10,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
