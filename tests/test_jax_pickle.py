"""JAX optimizer states pickle, for every optimizer of the zoo and for ``dynopt.jax.from_spec`` specs.

The state types are NamedTuples built at run time, so pickle cannot find them by qualified name;
their instances pickle as a call that rebuilds the class (``optax_transform._rebuild_state``).
Checked here: the round trip returns the very class ``init`` returns with bit-identical leaves
(dtype included), and several steps taken after unpickling equal, bit for bit, the same steps
taken without pickling. A spec defined in this test module, the meta step wrapped around it, and
a spec defined in a ``__main__`` script (unpickled in another process that never defined it) are
covered too.
"""

from __future__ import annotations

import copy
import functools
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import optax
import pytest
from zoo_options import STATEFUL, assert_bit_identical, make_step, params0, run
from zoo_options import params0 as zoo_params0

import dynopt
import dynopt.jax
from dynopt.optimizers import ZOO
from dynopt.spec import Hyper, Spec, interval, nonnegative

ROOT = pathlib.Path(__file__).resolve().parents[1]

OPTIONS = STATEFUL


def signum_update(o, hp, t, grad, param, state):
    velocity = hp.momentum * state.velocity + o.sign(grad)
    return -hp.lr * velocity, {"velocity": velocity}


def signum_field(o, hp, time, param, state, grad):
    return -state.velocity, {"velocity": (o.sign(grad) - (1 - hp.momentum) * state.velocity) / hp.lr}


SIGNUM = Spec(  # a user's spec, defined here and never registered
    name="PickleSignum",
    hyperparams=(Hyper("lr", 1e-3, "step", nonnegative), Hyper("momentum", 0.9, "momentum", interval(0.0, 1.0))),
    state=lambda hp: ("velocity",),
    update=signum_update, vector_field=signum_field,
    time_step=lambda hp: hp.lr, needs_params=lambda hp: False,
    ode="θ' = −v", scheme="Euler", hyper_map="h = lr",
)
USER = {"PickleSignum": (dynopt.jax.from_spec(SIGNUM), {"momentum": 0.8}),
        "MetaPickleSignum": (dynopt.jax.from_spec(dynopt.meta_step(SIGNUM)), {"momentum": 0.8, "meta_lr": 0.05, "gain_lr": 0.01})}


OPTAX_OPTIONS = {"sgd": {"momentum": 0.9}, "rmsprop": {"momentum": 0.5, "centered": True}, "adamw": {"weight_decay": 0.01},
                 "adadelta": {"weight_decay": 0.01}, "amsgrad": {"b2": 0.99}}  # optax's names: dynopt.jax.<name>


def optimizers():
    # the specs themselves (torch's names: OPTIONS), and dynopt.jax's optax views (Adam's adam and amsgrad, ...)
    zoo = {spec.name: (dynopt.jax.from_spec(spec), OPTIONS.get(spec.name, {})) for spec in ZOO}
    views = {".".join(("optax", view.namespace, view.name) if view.namespace else ("optax", view.name)):
             (getattr(getattr(dynopt.jax, view.namespace) if view.namespace else dynopt.jax, view.name),
              OPTAX_OPTIONS.get(view.name, {})) for spec in ZOO for view in spec.optax}  # optax.contrib.muon too
    return {**zoo, **views, **USER}


def test_every_optimizer_of_the_zoo_is_covered():
    assert {spec.name for spec in ZOO} == set(OPTIONS)


@pytest.mark.parametrize("name", sorted(optimizers()))
def test_state_pickles_and_continues_bit_identically(name):
    factory, options = optimizers()[name]
    params0 = functools.partial(zoo_params0, dynopt.REGISTRY.get(name))  # Muon: its matrices only
    opt = factory(0.01, **options)
    step = make_step(opt)
    params, state = run(step, params0(), opt.init(params0()), 0, 3)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        restored = pickle.loads(pickle.dumps(state, protocol=protocol))
        assert type(restored) is type(state) is type(opt.init(params0()))
        assert restored._fields == state._fields and int(restored.count) == 3
        assert_bit_identical(restored, state)
    assert type(copy.deepcopy(state)) is type(state)
    assert_bit_identical(run(step, params, restored, 3, 8), run(step, params, state, 3, 8))
    # the state of a fresh init, and a state inside a larger tree, pickle too
    assert_bit_identical(pickle.loads(pickle.dumps(opt.init(params0()))), opt.init(params0()))
    nested = pickle.loads(pickle.dumps({"params": params, "opt_state": (state, optax.EmptyState())}))
    assert_bit_identical(nested["opt_state"][0], state)


def test_states_with_different_fields_keep_their_own_class():
    # RMSprop's fields depend on static options: two classes of one name, each pickles back to itself
    plain, centered = (dynopt.jax.rmsprop(0.01, centered=c).init(params0()) for c in (False, True))
    assert type(plain).__name__ == type(centered).__name__ == "RMSpropState" and type(plain) is not type(centered)
    assert type(pickle.loads(pickle.dumps(plain))) is type(plain)
    assert type(pickle.loads(pickle.dumps(centered))) is type(centered)


MAIN_SCRIPT = """
import pickle, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import optax
import dynopt.jax
from dynopt.spec import Hyper, Spec, nonnegative

def update(o, hp, t, grad, param, state):  # a spec defined in __main__
    trace = hp.decay * state.trace + grad * grad
    return -hp.lr * grad / (o.sqrt(trace) + 1.0), {"trace": trace}

spec = Spec(name="MainAdagrad", hyperparams=(Hyper("lr", 0.1, "step", nonnegative), Hyper("decay", 0.9, "decay", nonnegative)),
            state=lambda hp: ("trace",), update=update, vector_field=lambda o, hp, time, grad, param, state: (-grad, {"trace": grad * grad}),
            time_step=lambda hp: hp.lr, needs_params=lambda hp: False, ode="θ' = −∇L", scheme="Euler", hyper_map="h = lr")
opt = dynopt.jax.from_spec(spec)(0.1, decay=0.5)

@jax.jit
def step(p, s, k):
    u, s = opt.update(jax.tree.map(lambda x: jnp.sin((1.0 + k) * x), p), s, p)
    return optax.apply_updates(p, u), s

p, s = {"w": jnp.linspace(-1.0, 1.0, 5)}, None
s = opt.init(p)
for k in range(3):
    p, s = step(p, s, k)
blob = pickle.dumps(s)
open(sys.argv[1], "wb").write(blob)
t = pickle.loads(blob)
assert type(t) is type(s) and type(t).__module__ == "__main__"
p2 = p
for k in range(3, 8):
    p, s = step(p, s, k)
    p2, t = step(p2, t, k)
np.savez(sys.argv[2], trace=np.asarray(jax.tree.leaves(s.trace)[0]), count=np.asarray(s.count),
         same=all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((p, s)), jax.tree.leaves((p2, t)))))
"""


def test_state_of_a_spec_defined_in_main_pickles_across_processes(tmp_path):
    script = tmp_path / "main_spec.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "state.pkl"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as out:
        assert bool(out["same"]) and int(out["count"]) == 8
    # this process never defined the spec: the class is rebuilt from its name, fields and module
    state = pickle.loads((tmp_path / "state.pkl").read_bytes())
    assert type(state).__name__ == "MainAdagradState" and type(state).__module__ == "__main__"
    assert state._fields == ("count", "trace") and int(state.count) == 3 and state.trace["w"].shape == (5,)
