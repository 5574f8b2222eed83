"""The lecture notes' sigmoid network trained by plain SGD, with its learning curve.

seed_cnn: conv 6@5x5 sigmoid -> avg-pool 2 -> conv 12@5x5 sigmoid -> avg-pool 2 -> dense 64 sigmoid ->
dense 10 -> softmax, trained on Fashion-MNIST by plain minibatch SGD (no momentum), learning rate 0.5,
batch 32, on the negative log-likelihood of its softmax output. Writes the curve to
experiments/results/seed_cnn_sgd.png.

    python experiments/seed_cnn_sgd.py [--epochs 5]
"""

import argparse

import optax
from common import RESULTS, run

from jaxcnn import data, models, plots, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

ds = data.load("fashion-mnist")
record = run(
    "seed_cnn_sgd",
    models.seed_cnn(),
    ds,
    epochs=args.epochs,
    batch_size=32,
    optimizer=optax.sgd(0.5),
    loss_fn=train.probability_nll_loss,
)
plots.plot_curves(record["history"], RESULTS / "seed_cnn_sgd.png")
