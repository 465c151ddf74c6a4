"""dynopt optimizers as ``torch.optim.Optimizer`` classes, generated from their specs.

    >>> import torch, dynopt.torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = dynopt.torch.Momentum([w], lr=0.1, momentum=0.9)   # == torch.optim.SGD(..., momentum=0.9)

``from_spec(spec)`` builds the class for any :class:`dynopt.spec.Spec`, including your own.
"""

from ._backends.torch_optim import SpecOptimizer, from_spec
from .optimizers import (
           adam,
           eg,
           meta_adam,
           meta_momentum,
           meta_nesterov,
           meta_rmsprop,
           meta_sgd,
           momentum,
           nesterov,
           rmsprop,
           sgd,
)

SGD = from_spec(sgd)
Momentum = from_spec(momentum)
Nesterov = from_spec(nesterov)
RMSprop = from_spec(rmsprop)
Adam = from_spec(adam)
EG = from_spec(eg)
MetaSGD = from_spec(meta_sgd)
MetaMomentum = from_spec(meta_momentum)
MetaNesterov = from_spec(meta_nesterov)
MetaRMSprop = from_spec(meta_rmsprop)
MetaAdam = from_spec(meta_adam)

__all__ = ["from_spec", "SpecOptimizer", "SGD", "Momentum", "Nesterov", "RMSprop", "Adam", "EG",
           "MetaSGD", "MetaMomentum", "MetaNesterov", "MetaRMSprop", "MetaAdam"]
