"""dynopt optimizers as optax ``GradientTransformationExtraArgs`` factories, generated from their specs.

    >>> import optax, dynopt.jax
    >>> opt = dynopt.jax.adam(1e-3, b1=0.9, b2=0.999)   # == optax.adam(1e-3, b1=0.9, b2=0.999)
    >>> opt = dynopt.jax.momentum(0.1, momentum=0.9)    # == optax.sgd(0.1, momentum=0.9)

The factories speak optax: where optax has the optimizer (``sgd``, ``adam``, ``adamw``, ``amsgrad``, ``nadam``,
``nadamw``, ``radam``, ``adamax``, ``adagrad``, ``adadelta``, ``rprop``, ``rmsprop``, ``noisy_sgd``, and the other
optax views of the zoo), ``dynopt.jax.<name>`` takes optax's arguments in optax's order with optax's defaults and
computes optax's numbers (the spec's optax views, :class:`dynopt.spec.OptaxView`); ``dynopt.torch`` keeps
torch.optim's. ``dynopt.jax.contrib`` holds the views of ``optax.contrib`` (``dynopt.jax.contrib.muon``). The others (``momentum``, ``nesterov``,
``eg``, ``meta_*``, ``nesterov_sbc``, ``asgd``, ...) have no optax twin and take ``(learning_rate,
<the spec's hyperparameters>...)``.

``from_spec(spec)`` builds the factory of any :class:`dynopt.spec.Spec`, including your own, computing the spec
itself with its own hyperparameter names: ``from_spec(dynopt.optimizers.adam)`` is torch.optim.Adam's algorithm
(``betas``, coupled ``weight_decay``, ``amsgrad``) in JAX. ``factories(spec)`` gives what this module exports for
a spec, ``from_view(view)`` one optax view.
"""

import sys
import types

from ._backends.optax_transform import factories, from_spec, from_view
from .optimizers import ZOO

# every optax view of every spec (Adam: adam and amsgrad), or the spec's own factory when it has none
_EXPORTED = {name: factory for spec in ZOO for name, factory in factories(spec, __name__).items()}

(sgd, momentum, nesterov, rmsprop, adam, eg,
 meta_sgd, meta_momentum, meta_nesterov, meta_rmsprop, meta_adam,
 nesterov_sbc,
 adamw, radam, adamax, adagrad, adadelta, rprop, nadam, asgd, adafactor_torch, muon_torch,
 sign_sgd, signum, lion, adabelief, yogi, lamb, lars, noisy_sgd) = (_EXPORTED[spec.jax_name] for spec in ZOO)
amsgrad, nadamw = _EXPORTED["amsgrad"], _EXPORTED["nadamw"]  # optax views without a spec of their own (Adam's, AdamW's)

# optax.contrib's factories, as dynopt.jax.contrib (importable: ``import dynopt.jax.contrib``)
_CONTRIB = {name: factory for spec in ZOO for name, factory in factories(spec, __name__, "contrib").items()}
contrib = types.ModuleType(f"{__name__}.contrib", "optax.contrib's optimizers, with optax.contrib's arguments and numbers "
                           "(``dynopt.jax.contrib.muon`` equals ``optax.contrib.muon``; its docstring says what is left).")
contrib.__dict__.update(_CONTRIB, __all__=list(_CONTRIB))
sys.modules[contrib.__name__] = contrib

__all__ = ["from_spec", "from_view", "factories", "contrib"] + list(_EXPORTED)
