"""ResNet-20 with data augmentation on Fashion-MNIST (target: >= 92% within one hour on 2 CPU cores).

CIFAR-style ResNet-20 (3 stages of 16/32/64 channels, batch norm, strided 1x1 shortcuts), random
crops (pad 2) and horizontal flips, SGD with momentum 0.9 and weight decay 5e-4, learning rate 0.1
with a linear warm-up and cosine decay, batch 128.

    python experiments/fashion_resnet20.py [--epochs 12]
"""

import argparse

import optax
from common import run

from jaxcnn import data, models
from jaxcnn.data import augment

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=12)
args = parser.parse_args()

BATCH = 128
ds = data.load("fashion-mnist")
steps = args.epochs * (len(ds.x_train) // BATCH)
schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, steps // 20, steps)
optimizer = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(schedule, momentum=0.9, nesterov=True))
run(
    "fashion_resnet20",
    models.resnet20(),
    ds,
    epochs=args.epochs,
    batch_size=BATCH,
    optimizer=optimizer,
    learning_rate=schedule,
    augment=lambda key, x: augment(key, x, crop_pad=2, flip=True),
)
