"""The 2-conv network of Fashion-MNIST's benchmark table on Fashion-MNIST (table: 91.6%; target >= 91.5%).

conv 32@5x5 SAME -> pool -> conv 64@5x5 SAME -> pool -> dense 1024 -> dropout 0.5 -> dense 10, Adam
1e-3 with cosine decay, batch 128, 20 epochs, no augmentation.

    python experiments/fashion_cnn.py
"""

import optax
from common import run

from jaxcnn import data, models

EPOCHS, BATCH = 20, 128
ds = data.load("fashion-mnist")
schedule = optax.cosine_decay_schedule(1e-3, EPOCHS * (len(ds.x_train) // BATCH))
run(
    "fashion_cnn",
    models.fashion_cnn(),
    ds,
    epochs=EPOCHS,
    batch_size=BATCH,
    optimizer=optax.adam(schedule),
    learning_rate=schedule,
)
