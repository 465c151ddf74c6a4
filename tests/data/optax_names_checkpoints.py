"""How ``optax_names_checkpoints.pt`` was written: with dynopt at commit e68391f, the last release whose
dynopt.torch.Lion took optax's ``b1, b2`` and dynopt.torch.Signum ``beta`` (now ``betas`` and ``momentum``).

    git worktree add /tmp/old e68391f && python tests/data/optax_names_checkpoints.py /tmp/old

Each optimizer steps two float64 parameters 3 times on gradients sin(θ·(k + 1) + i); the file holds the
parameters and the state_dict after those steps. tests/test_zoo_optax_new.py loads them into today's classes.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[1])
import dynopt  # noqa: E402
import dynopt.torch as dt  # noqa: E402

assert Path(dynopt.__file__).is_relative_to(sys.argv[1]), dynopt.__file__
torch.set_default_dtype(torch.float64)
CASES = {"Lion": {"lr": 0.01, "b1": 0.8, "b2": 0.95, "weight_decay": 0.1}, "Signum": {"lr": 0.01, "beta": 0.7}}


def gradients(params, k):
    for i, p in enumerate(params):
        p.grad = torch.sin(p.detach() * (k + 1) + i)


out = {}
for name, kw in CASES.items():
    params = [torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3)), torch.nn.Parameter(torch.tensor([0.5, -0.3]))]
    opt = getattr(dt, name)(params, **kw)
    for k in range(3):
        gradients(params, k)
        opt.step()
    out[name] = {"params": [p.detach().clone() for p in params], "state_dict": opt.state_dict()}
torch.save(out, Path(__file__).with_suffix(".pt"))
