"""What every experiment script does after choosing a model and its training recipe: train with
``jaxcnn.train.fit``, then print and record the test accuracy and the wall time."""

import json
import time
from pathlib import Path

from jaxcnn import train

RESULTS = Path(__file__).resolve().parent / "results"


def run(
    name: str,
    model,
    ds,
    *,
    epochs: int,
    batch_size: int,
    optimizer,
    learning_rate=None,
    seed: int = 0,
    augment=None,
    loss_fn=train.cross_entropy_loss,
    out_dir=None,
) -> dict:
    """Train ``model`` on ``ds`` and write ``experiments/results/<name>.json`` (history included)."""
    out_dir = Path(out_dir or f"runs/experiments/{name}")
    start = time.perf_counter()
    result = train.fit(
        model,
        ds,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        seed=seed,
        augment=augment,
        loss_fn=loss_fn,
        out_dir=out_dir,
        log_every=100,
    )
    seconds = time.perf_counter() - start
    record = {
        "experiment": name,
        "test_accuracy": result.test["accuracy"],
        "test_loss": result.test["loss"],
        "epochs": epochs,
        "steps": int(result.state.step),
        "wall_seconds": round(seconds, 1),
        "history": result.history,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{name}: test accuracy {result.test['accuracy']:.4f} after {epochs} epochs "
        f"({int(result.state.step)} steps) in {seconds / 60:.1f} min"
    )
    return record
