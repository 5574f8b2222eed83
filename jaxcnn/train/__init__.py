"""Training with optax on the hand-derived VJPs, one module per concern.

- :mod:`~jaxcnn.train.optim`: optimizers and learning-rate schedules by name (the CLI's registries).
- :mod:`~jaxcnn.train.step`: the ``TrainState`` pytree, the objective with its mixed-precision policy,
  the jitted train and eval steps, evaluation, per-example gradients.
- :mod:`~jaxcnn.train.loop`: the training loop (checkpoints that resume bit-identically, metrics, progress).
- :mod:`~jaxcnn.train.recipes`: a run's configuration by name (:class:`RunConfig`) and the datasets' recipes.
- :mod:`~jaxcnn.train.run`: a whole run from a :class:`RunConfig`, as ``jaxcnn train`` and ``jaxcnn eval``
  do it (the command line hands its options to :func:`jaxcnn.train.run.main` in one call).

Scaling out (see :mod:`jaxcnn.distributed`): ``fit(..., devices=n)`` or ``fit(..., mesh=mesh)`` splits
every batch over a 1-D device mesh and replicates the train state; with several processes (after
``jax.distributed.initialize``) every process computes the same global batch order from
``(seed, epoch)`` and feeds its contiguous block of each global batch. ``compute_dtype=jnp.bfloat16``
runs the forward and backward passes in bfloat16 while parameters, optimizer state, the loss and the
gradients stay float32. :func:`per_example_grads` gives one gradient per example (``vmap`` over the
hand-derived VJPs), for DP-SGD and gradient statistics.
"""

from . import loop as loop
from . import optim as optim
from . import recipes as recipes
from . import run as run
from . import step as step
from .loop import Callback as Callback
from .loop import Checkpoints as Checkpoints
from .loop import FitConfig as FitConfig
from .loop import FitResult as FitResult
from .loop import Loop as Loop
from .loop import MetricsFile as MetricsFile
from .loop import Progress as Progress
from .loop import ProgressBar as ProgressBar
from .loop import fit as fit
from .optim import OPTIMIZERS as OPTIMIZERS
from .optim import SCHEDULES as SCHEDULES
from .optim import make_learning_rate as make_learning_rate
from .optim import make_optimizer as make_optimizer
from .step import LOSSES as LOSSES
from .step import TrainState as TrainState
from .step import as_compute_dtype as as_compute_dtype
from .step import aux_cross_entropy_loss as aux_cross_entropy_loss
from .step import cross_entropy_loss as cross_entropy_loss
from .step import evaluate as evaluate
from .step import init_train_state as init_train_state
from .step import make_eval_step as make_eval_step
from .step import make_objective as make_objective
from .step import make_train_step as make_train_step
from .step import per_example_grads as per_example_grads
from .step import primary_cross_entropy_loss as primary_cross_entropy_loss
from .step import primary_output as primary_output
from .step import probability_nll_loss as probability_nll_loss

__all__ = [*step.__all__, *optim.__all__, *loop.__all__, "recipes", "run"]
