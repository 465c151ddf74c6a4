"""``DirectCompiled``: a compiled function whose steady calls skip dynamo must compute what the dynamo call
computes, for every call pattern, and fall back to dynamo for patterns it has not seen.

Expected values come from the uncompiled function run on copies of the same inputs (eager ATen ops)."""

from __future__ import annotations

import torch

from dynopt._backends.torch_direct import DirectCompiled


def update(*flat):
    """The shape of a flat plan's kernel: a gradient, a parameter read, a state and two 0-dim inputs; the
    parameter (the target) and the state are written in place; one new 0-dim value is returned."""
    grad, param, state, lr, beta, target = flat
    new_state = state * beta + grad
    target.add_(new_state * lr + param * 0.5 * lr)
    state.copy_(new_state)
    return [beta * 2 + lr]


def run(fn, flat):
    return fn(*flat)


def copies(flat):
    """The same values in new tensors, with the same aliasing (an argument repeated is the same copy)."""
    made = {}
    return tuple(made.setdefault(id(x), x.clone()) for x in flat)


def case(n, aliased):
    grad, param, state = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    lr, beta = torch.tensor(-0.1, dtype=torch.float64), torch.tensor(0.9, dtype=torch.float64)
    target = param if aliased else torch.randn(n, dtype=torch.float64)
    return (grad, param, state, lr, beta, target)


def check(kernel, flat):
    expected_in = copies(flat)
    expected = update(*expected_in)
    got = kernel(*flat)
    for a, b in zip(flat, expected_in):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_direct_calls_equal_the_eager_function_for_each_pattern():
    kernel = DirectCompiled(update, "dynopt_test_direct_update")
    seen = []
    for n, aliased in [(16, False), (16, False), (1000, False), (16, True), (16, True), (1, False), (1, False),
                       (7, True), (16, False)]:
        check(kernel, case(n, aliased))
        seen.append(kernel.direct_calls)
    # the first call of each pattern (not aliased, aliased, one element) goes through dynamo; the others skip it
    assert seen == [0, 1, 2, 2, 3, 3, 4, 5, 6], seen


def test_the_symbolic_size_comes_from_the_arguments():
    """Sizes differ from the compiled example (16): the direct call passes the size of the arguments it got."""
    kernel = DirectCompiled(update, "dynopt_test_direct_sizes")
    check(kernel, case(16, False))
    for n in (3, 33, 4097):
        check(kernel, case(n, False))
    assert kernel.direct_calls == 3


def test_a_fused_step_skips_dynamo_after_its_first_call_and_a_one_kernel_update_is_not_compiled():
    """fused=True on flattened parameters: Momentum's bucket kernel is called directly from its second call on
    (its numbers are the reference path's: tests/test_torch_paths.py, tests/test_flat_parameters.py); SGD's update
    is one ATen kernel, which the eager program runs (no compiled kernel, nothing to fuse)."""
    import dynopt.torch as dt
    from dynopt._backends import torch_eager_graph

    for name, kwargs in (("Momentum", {"momentum": 0.9}), ("SGD", {})):
        params = [torch.nn.Parameter(torch.randn(n)) for n in (5, 7, 3)]
        dt.flatten_parameters(params)
        opt = getattr(dt, name)(params, lr=0.1, fused=True, **kwargs)
        for _ in range(5):
            opt.zero_grad()
            sum(p.sum() for p in params).backward()
            opt.step()
        assert opt.execution.path == "fused" and opt.execution.direct == 3
        (bucket,) = opt._flat.buckets()
        if name == "Momentum":
            assert bucket.kernel is not None and bucket.kernel[1].loop.direct_calls >= 3
        else:
            assert bucket.kernel is None and isinstance(bucket.program[1], torch_eager_graph.Program)
            assert bucket.program[1].passes == 1


def test_an_input_of_other_strides_goes_back_to_dynamo():
    """The pattern does not cover strides: a strided gradient fails inductor's size/stride check, which runs before
    any kernel writes; that call (and the pattern from then on) goes through dynamo, which recompiles for it."""
    kernel = DirectCompiled(update, "dynopt_test_direct_strides")
    check(kernel, case(16, False))
    check(kernel, case(16, False))
    assert kernel.direct_calls == 1
    grad, param, state, lr, beta, target = case(16, False)
    strided = torch.randn(32, dtype=torch.float64)[::2]
    check(kernel, (strided, param, state, lr, beta, target))
    assert kernel.direct_calls == 1
