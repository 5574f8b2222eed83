"""MNIST-1D with the paper's CNN, trained through jaxcnn's hand-derived VJPs.

Greydanus (2020), "Scaling down deep learning": the ConvBase CNN reaches about 94% test accuracy.
This script follows the paper's training loop (notebooks/train.py in the mnist1d repository): Adam,
learning rate 1e-2, no weight decay, batches of 100 taken in order without shuffling, 8000 steps,
PyTorch's default initialisation. It runs several seeds, since the test set has only 1,000 signals.

    python experiments/mnist1d_cnn.py [--seeds 0 1 2] [--steps 8000]
"""

import argparse
import json
import time

import jax.numpy as jnp
import numpy as np
import optax

from jaxcnn import data, models, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--steps", type=int, default=8000)
parser.add_argument("--json", help="write the results here")
args = parser.parse_args()

ds = data.load("mnist1d")  # 4,000 train / 1,000 test signals of 40 samples
model = models.mnist1d_cnn()  # PyTorch-style init, as in the paper
optimizer = optax.adam(1e-2)
step = train.make_train_step(model, optimizer)
batch = 100

results = []
for seed in args.seeds:
    state = train.init_train_state(model, (batch, 40, 1), optimizer, seed)
    start = time.perf_counter()
    for t in range(args.steps):
        i = (t * batch) % len(ds.x_train)  # the paper's loop: consecutive batches, no shuffling
        state, _ = step(state, jnp.asarray(ds.x_train[i : i + batch]), jnp.asarray(ds.y_train[i : i + batch]))
    state.params  # noqa: B018
    seconds = time.perf_counter() - start
    test = train.evaluate(model, state.params, state.model_state, ds.x_test, ds.y_test)
    results.append({"seed": seed, "test_accuracy": test["accuracy"], "train_seconds": round(seconds, 1)})
    print(f"seed {seed}: test accuracy {test['accuracy']:.3f} after {args.steps} steps, {seconds:.1f} s", flush=True)

accuracies = [r["test_accuracy"] for r in results]
print(
    f"mean test accuracy {np.mean(accuracies):.4f} (min {min(accuracies):.3f}, max {max(accuracies):.3f}) "
    f"over seeds {args.seeds}"
)
if args.json:
    with open(args.json, "w") as f:
        json.dump({"experiment": "mnist1d_cnn", "steps": args.steps, "runs": results}, f, indent=1)
