"""dynopt optimizers in plain NumPy (float64): the discrete oracle, and cheap 2-D trajectories.

    >>> import numpy as np, dynopt.numpy
    >>> opt = dynopt.numpy.momentum(0.1, momentum=0.9)
    >>> state = opt.init([np.ones(2)])

The factories have the names and signatures of :mod:`dynopt.jax` (``lr`` first).
"""

from ._backends.numpy_oracle import NumpyOptimizer, from_spec
from .optimizers import ZOO

(sgd, momentum, nesterov, rmsprop, adam, eg,
 meta_sgd, meta_momentum, meta_nesterov, meta_rmsprop, meta_adam,
 nesterov_sbc,
 adamw, radam, adamax, adagrad, adadelta, rprop, nadam, asgd) = map(from_spec, ZOO)

__all__ = ["from_spec", "NumpyOptimizer"] + [spec.jax_name for spec in ZOO]
