"""dynopt optimizers as optax ``GradientTransformationExtraArgs`` factories, generated from their specs.

    >>> import optax, dynopt.jax
    >>> opt = dynopt.jax.momentum(0.1, momentum=0.9)   # == optax.sgd(0.1, momentum=0.9)

``from_spec(spec)`` builds the factory for any :class:`dynopt.spec.Spec`, including your own.
"""

from ._backends.optax_transform import from_spec
from .optimizers import adam as _adam
from .optimizers import eg as _eg
from .optimizers import meta_adam as _meta_adam
from .optimizers import meta_momentum as _meta_momentum
from .optimizers import meta_nesterov as _meta_nesterov
from .optimizers import meta_rmsprop as _meta_rmsprop
from .optimizers import meta_sgd as _meta_sgd
from .optimizers import momentum as _momentum
from .optimizers import nesterov as _nesterov
from .optimizers import rmsprop as _rmsprop
from .optimizers import sgd as _sgd

sgd = from_spec(_sgd)
momentum = from_spec(_momentum)
nesterov = from_spec(_nesterov)
rmsprop = from_spec(_rmsprop)
adam = from_spec(_adam)
eg = from_spec(_eg)
meta_sgd = from_spec(_meta_sgd)
meta_momentum = from_spec(_meta_momentum)
meta_nesterov = from_spec(_meta_nesterov)
meta_rmsprop = from_spec(_meta_rmsprop)
meta_adam = from_spec(_meta_adam)

__all__ = ["from_spec", "sgd", "momentum", "nesterov", "rmsprop", "adam", "eg",
           "meta_sgd", "meta_momentum", "meta_nesterov", "meta_rmsprop", "meta_adam"]
