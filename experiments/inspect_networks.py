"""Looking inside networks: the summaries of LeNet-5, VGG-16 and ResNet-50 (shapes, parameters, FLOPs,
receptive fields), then a LeNet-5 trained on Fashion-MNIST for 3 epochs and what it computes on one test
image: every channel of both convolutions, the first-layer filters, and what one unit of the second
convolution sees (its input gradient, its computed receptive field as a box).

    python experiments/inspect_networks.py [--epochs 3] [--index 0]

Writes experiments/results/summaries.txt and docs/images/lenet5_{feature_maps,filters,receptive_field}.png.
"""

import argparse
from pathlib import Path

import optax
from common import RESULTS, run

import jaxcnn
from jaxcnn import data, models, plots

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--index", type=int, default=0, help="the test image to look at")
args = parser.parse_args()

tables = [
    jaxcnn.summary(models.lenet5(), (1, 28, 28, 1), name="lenet5"),
    jaxcnn.summary(models.vgg16(), (1, 224, 224, 3), name="vgg16"),
    jaxcnn.summary(models.resnet50(), (1, 224, 224, 3), name="resnet50"),
]
RESULTS.mkdir(exist_ok=True)
(RESULTS / "summaries.txt").write_text("\n\n".join(map(str, tables)) + "\n")
for table in tables:
    print(table, end="\n\n")

ds = data.load("fashion-mnist")
model = models.lenet5()
schedule = optax.cosine_decay_schedule(1e-3, args.epochs * (len(ds.x_train) // 128))
run("inspect_lenet5", model, ds, epochs=args.epochs, batch_size=128, optimizer=optax.adam(schedule))
template = jaxcnn.train.init_train_state(model, (128, 28, 28, 1), optax.adam(schedule), 0)
state, _ = jaxcnn.checkpoint.load("runs/experiments/inspect_lenet5", template)  # what run() trained
x = ds.x_test[args.index]
IMAGES.mkdir(parents=True, exist_ok=True)
made = [
    plots.plot_feature_maps(model, *state[:2], x, ["1", "4"], IMAGES / "lenet5_feature_maps.png"),  # after the ReLUs
    plots.plot_filters(state.params, IMAGES / "lenet5_filters.png"),
    plots.plot_receptive_field(model, *state[:2], x, "3", (5, 5), IMAGES / "lenet5_receptive_field.png"),
]
print(f"test image {args.index} ({ds.class_names[int(ds.y_test[args.index])]}):", ", ".join(map(str, made)))
