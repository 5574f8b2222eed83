"""LeNet-5 on Fashion-MNIST (target: >= 89% test accuracy).

conv 6@5x5 SAME -> pool -> conv 16@5x5 -> pool -> dense 120 -> 84 -> 10 (61,706 parameters), Adam
1e-3 with cosine decay, batch 128, 15 epochs, no augmentation.

    python experiments/fashion_lenet5.py
"""

import optax
from common import run

from jaxcnn import data, models

EPOCHS, BATCH = 15, 128
ds = data.load("fashion-mnist")  # 60,000 train / 10,000 test, 28x28x1 in [0, 1]
schedule = optax.cosine_decay_schedule(1e-3, EPOCHS * (len(ds.x_train) // BATCH))
run(
    "fashion_lenet5",
    models.lenet5(),
    ds,
    epochs=EPOCHS,
    batch_size=BATCH,
    optimizer=optax.adam(schedule),
    learning_rate=schedule,
)
