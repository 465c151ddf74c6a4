"""The zoo: one file per optimizer, each a :class:`dynopt.spec.Spec`. One line per optimizer here."""

from .sgd import sgd as sgd
from .momentum import momentum as momentum
from .nesterov import nesterov as nesterov
from .rmsprop import rmsprop as rmsprop
from .adam import adam as adam

__all__ = ["sgd", "momentum", "nesterov", "rmsprop", "adam"]
