"""dynopt: optimizers written once as ODE discretizations.

Each optimizer is a :class:`~dynopt.spec.Spec` (``dynopt.optimizers``): continuous dynamics plus
a discretization. From it dynopt derives a ``torch.optim.Optimizer`` (``dynopt.torch``), an optax
``GradientTransformation`` (``dynopt.jax``), a NumPy oracle (``dynopt.numpy``) and the reference
ODE flow (``dynopt.ode``). ``import dynopt`` imports neither torch nor jax.
"""

from . import schemes
from .optimizers import (
                         ZOO,
                         adabelief,
                         adadelta,
                         adafactor_torch,
                         adagrad,
                         adam,
                         adamax,
                         adamw,
                         asgd,
                         eg,
                         lamb,
                         lars,
                         lion,
                         meta_adam,
                         meta_momentum,
                         meta_nesterov,
                         meta_rmsprop,
                         meta_sgd,
                         meta_step,
                         momentum,
                         muon_torch,
                         nadam,
                         nesterov,
                         nesterov_sbc,
                         noisy_sgd,
                         radam,
                         rmsprop,
                         rprop,
                         sgd,
                         sign_sgd,
                         signum,
                         yogi,
)
from .spec import REGISTRY, Hyper, Spec, is_static_zero, register
from .statement import accumulate, discretize

__version__ = "0.1.0"

__all__ = ["Spec", "Hyper", "REGISTRY", "ZOO", "register", "is_static_zero", "meta_step", "discretize", "accumulate", "schemes",
           "sgd", "momentum", "nesterov", "rmsprop", "adam", "eg",
           "meta_sgd", "meta_momentum", "meta_nesterov", "meta_rmsprop", "meta_adam", "nesterov_sbc",
           "adamw", "radam", "adamax", "adagrad", "adadelta", "rprop", "nadam", "asgd", "adafactor_torch", "muon_torch",
           "sign_sgd", "signum", "lion", "adabelief", "yogi", "lamb", "lars", "noisy_sgd"]
