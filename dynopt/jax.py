"""dynopt optimizers as optax ``GradientTransformationExtraArgs`` factories, generated from their specs.

    >>> import optax, dynopt.jax
    >>> opt = dynopt.jax.momentum(0.1, momentum=0.9)   # == optax.sgd(0.1, momentum=0.9)

``from_spec(spec)`` builds the factory for any :class:`dynopt.spec.Spec`, including your own.
"""

from ._backends.optax_transform import from_spec
from .optimizers import ZOO

(sgd, momentum, nesterov, rmsprop, adam, eg,
 meta_sgd, meta_momentum, meta_nesterov, meta_rmsprop, meta_adam,
 nesterov_sbc,
 adamw, radam, adamax, adagrad, adadelta, rprop, nadam, asgd) = map(from_spec, ZOO)

__all__ = ["from_spec"] + [spec.jax_name for spec in ZOO]
