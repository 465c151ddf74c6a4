"""dynopt optimizers in plain NumPy (float64): the discrete oracle, and cheap 2-D trajectories.

    >>> import numpy as np, dynopt.numpy
    >>> opt = dynopt.numpy.momentum(0.1, momentum=0.9)
    >>> state = opt.init([np.ones(2)])

The factories have the zoo's names and take each spec's own hyperparameters (``lr`` first): for the zoo, torch.optim's
names and algorithm (``dynopt.numpy.adam(lr, betas=(0.9, 0.999))``), as ``dynopt.torch``. :mod:`dynopt.jax` speaks
optax instead (``dynopt.jax.adam(learning_rate, b1, b2, ...)``); the statement behind an optax factory steps in NumPy
too: ``dynopt.numpy.from_spec(view.spec)(lr, b1=..., b2=...)`` with ``view`` from ``dynopt.optimizers.adam.optax``.
"""

from ._backends.numpy_oracle import NumpyOptimizer, from_spec
from .optimizers import ZOO

(sgd, momentum, nesterov, rmsprop, adam, eg,
 meta_sgd, meta_momentum, meta_nesterov, meta_rmsprop, meta_adam,
 nesterov_sbc,
 adamw, radam, adamax, adagrad, adadelta, rprop, nadam, asgd, adafactor_torch, muon_torch,
 sign_sgd, signum, lion, adabelief, yogi, lamb, lars, noisy_sgd) = map(from_spec, ZOO)

__all__ = ["from_spec", "NumpyOptimizer"] + [spec.jax_name for spec in ZOO]
