"""The zoo: one file per optimizer, each a :class:`dynopt.spec.Spec`. One line per optimizer here."""

from .adabelief import adabelief as adabelief
from .adadelta import adadelta as adadelta
from .adafactor import adafactor as adafactor_torch  # optax.adafactor is another algorithm
from .adagrad import adagrad as adagrad
from .adam import adam as adam
from .adamax import adamax as adamax
from .adamw import adamw as adamw
from .asgd import asgd as asgd
from .eg import eg as eg
from .lamb import lamb as lamb
from .lars import lars as lars
from .lion import lion as lion
from .meta_step import meta_adam as meta_adam
from .meta_step import meta_momentum as meta_momentum
from .meta_step import meta_nesterov as meta_nesterov
from .meta_step import meta_rmsprop as meta_rmsprop
from .meta_step import meta_sgd as meta_sgd
from .meta_step import meta_step as meta_step
from .momentum import momentum as momentum
from .muon import muon as muon_torch  # dynopt.<jax_name> is the spec; optax.contrib.muon is another rule
from .nadam import nadam as nadam
from .nesterov import nesterov as nesterov
from .nesterov_sbc import nesterov_sbc as nesterov_sbc
from .noisy_sgd import noisy_sgd as noisy_sgd
from .radam import radam as radam
from .rmsprop import rmsprop as rmsprop
from .rprop import rprop as rprop
from .sgd import sgd as sgd
from .sign_sgd import sign_sgd as sign_sgd
from .signum import signum as signum
from .yogi import yogi as yogi

# The order of the public names in dynopt.torch, dynopt.jax and dynopt.numpy.
ZOO = (sgd, momentum, nesterov, rmsprop, adam, eg, meta_sgd, meta_momentum, meta_nesterov, meta_rmsprop, meta_adam,
       nesterov_sbc, adamw, radam, adamax, adagrad, adadelta, rprop, nadam, asgd, adafactor_torch, muon_torch,
       sign_sgd, signum, lion, adabelief, yogi, lamb, lars, noisy_sgd)

__all__ = ["ZOO", "sgd", "momentum", "nesterov", "rmsprop", "adam", "eg", "meta_step",
           "meta_sgd", "meta_momentum", "meta_nesterov", "meta_rmsprop", "meta_adam", "nesterov_sbc",
           "adamw", "radam", "adamax", "adagrad", "adadelta", "rprop", "nadam", "asgd", "adafactor_torch", "muon_torch",
           "sign_sgd", "signum", "lion", "adabelief", "yogi", "lamb", "lars", "noisy_sgd"]
