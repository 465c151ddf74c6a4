"""dynopt optimizers as ``torch.optim.Optimizer`` classes, generated from their specs.

    >>> import torch, dynopt.torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = dynopt.torch.Momentum([w], lr=0.1, momentum=0.9)   # == torch.optim.SGD(..., momentum=0.9)

``from_spec(spec)`` builds the class for any :class:`dynopt.spec.Spec`, including your own.
"""

from ._backends.torch_flat_params import FlatParameters, flatten_parameters
from ._backends.torch_optim import SpecOptimizer, from_spec
from .optimizers import ZOO

(SGD, Momentum, Nesterov, RMSprop, Adam, EG,
 MetaSGD, MetaMomentum, MetaNesterov, MetaRMSprop, MetaAdam,
 NesterovSBC,
 AdamW, RAdam, Adamax, Adagrad, Adadelta, Rprop, NAdam, ASGD, Adafactor, Muon,
 SignSGD, Signum, Lion, AdaBelief, Yogi, Lamb, Lars, NoisySGD) = map(from_spec, ZOO)

__all__ = ["from_spec", "SpecOptimizer", "flatten_parameters", "FlatParameters"] + [spec.name for spec in ZOO]
