"""dynopt optimizers as ``torch.optim.Optimizer`` classes, generated from their specs.

    >>> import torch, dynopt.torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = dynopt.torch.Momentum([w], lr=0.1, momentum=0.9)   # == torch.optim.SGD(..., momentum=0.9)

``from_spec(spec)`` builds the class for any :class:`dynopt.spec.Spec`, including your own.
"""

from ._backends.torch_optim import SpecOptimizer, from_spec
from .optimizers import adam, momentum, nesterov, rmsprop, sgd

SGD = from_spec(sgd)
Momentum = from_spec(momentum)
Nesterov = from_spec(nesterov)
RMSprop = from_spec(rmsprop)
Adam = from_spec(adam)

__all__ = ["from_spec", "SpecOptimizer", "SGD", "Momentum", "Nesterov", "RMSprop", "Adam"]
