"""dynopt.torch inside the training loops people use: a transformers ``Trainer`` and a Lightning ``Trainer``.

Swap the import, keep the arguments, get the same numbers: each loop runs once with ``torch.optim.AdamW`` and once
with ``dynopt.torch.AdamW`` (same seeds, data, schedule and gradient clipping), and the trained weights must agree.
Where the expected values come from: the same loop with torch.optim, run here side by side. The tolerance is
float32's: the two libraries evaluate AdamW's update in a different order (1e-12 apart in float64, see
tests/test_parity.py), so a step may round a weight to the neighbouring float32: after n steps the weights differ
by at most n ulps of the model's largest weight (measured: 5 ulps after 12 steps), and the weights moved by more
than 100 times that. The bound is the model's, not each tensor's: BERT's attention key bias has no gradient in
exact arithmetic (softmax ignores a shift), so its computed gradient is rounding noise of the forward pass, and
AdamW's m/(√v + ε) turns noise of size 1e-12 into steps of size lr·1e-4 that differ between any two runs whose
weights differ by an ulp. A checkpoint resumed inside the loop continues bit-identically.
"""

from __future__ import annotations

import pytest
import torch

import dynopt.torch as dt

torch.set_num_threads(1)
LR, DECAY = 1e-3, 0.01


def max_difference(xs, ys) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(xs, ys))


def assert_same_training(got, expected, initial, steps=12):
    """max |Δ| ≤ steps · ulp(max |θ|) over the whole model: each step may round a weight to its neighbouring float."""
    moved = max_difference(expected, initial)
    bound = steps * torch.finfo(torch.float32).eps * max(y.detach().abs().max().item() for y in expected)
    assert max_difference(got, expected) <= bound, (max_difference(got, expected), bound)
    assert moved > 100 * bound, f"the weights moved by {moved:.3g} only: the comparison would prove nothing"


# ------------------------------------------------------------------------------------------------ transformers

transformers = pytest.importorskip("transformers")


def _sequence_data(n=48, length=12, vocab=50):
    gen = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, vocab, (length,), generator=gen), "attention_mask": torch.ones(length, dtype=torch.long),
             "labels": torch.tensor(i % 2)} for i in range(n)]


def hf_train(make_optimizer, output_dir, *, max_steps=12, save_steps=None, resume=None):
    """A tiny BERT classifier trained by transformers.Trainer with the optimizer ``make_optimizer(model)`` (the
    Trainer builds its own linear warm-up/decay schedule around it and clips gradients to norm 1)."""
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(1)
    model = transformers.BertForSequenceClassification(config)
    initial = [p.detach().clone() for p in model.parameters()]
    args = transformers.TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=LR, seed=3,
        data_seed=3, report_to=[], use_cpu=True, dataloader_num_workers=0, lr_scheduler_type="linear", warmup_steps=2,
        max_grad_norm=1.0, logging_steps=1000, disable_tqdm=True,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 1000)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_sequence_data(),
                                   optimizers=(make_optimizer(model), None))
    trainer.train(resume_from_checkpoint=resume)
    return list(model.parameters()), initial


def torch_adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=DECAY)


def dynopt_adamw(model, **options):
    return dt.AdamW(model.parameters(), lr=LR, weight_decay=DECAY, **options)


@pytest.mark.parametrize("options", [{}, {"fused": True}], ids=["default", "fused"])
def test_transformers_trainer_trains_like_torch_optim(tmp_path, options):
    expected, initial = hf_train(torch_adamw, tmp_path / "torch")
    got, _ = hf_train(lambda m: dynopt_adamw(m, **options), tmp_path / "dynopt")
    assert_same_training(got, expected, initial)


def test_transformers_trainer_resumes_a_checkpoint_of_either_library(tmp_path):
    """The Trainer saves ``optimizer.state_dict()`` and loads it on resume: a dynopt checkpoint resumed by dynopt
    continues bit-identically, and one written by torch.optim resumed by dynopt continues like torch.optim."""
    uninterrupted, _ = hf_train(dynopt_adamw, tmp_path / "straight")
    hf_train(dynopt_adamw, tmp_path / "mine", save_steps=6)
    resumed, _ = hf_train(dynopt_adamw, tmp_path / "mine", resume=str(tmp_path / "mine" / "checkpoint-6"))
    assert max_difference(resumed, uninterrupted) == 0.0

    expected, initial = hf_train(torch_adamw, tmp_path / "torch-straight")
    hf_train(torch_adamw, tmp_path / "theirs", save_steps=6)
    crossed, _ = hf_train(dynopt_adamw, tmp_path / "theirs", resume=str(tmp_path / "theirs" / "checkpoint-6"))
    assert_same_training(crossed, expected, initial)


# ------------------------------------------------------------------------------------------------ Lightning

lightning = pytest.importorskip("lightning")


class Regression(lightning.LightningModule):
    def __init__(self, make_optimizer):
        super().__init__()
        torch.manual_seed(2)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.make_optimizer = make_optimizer

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)}


def lightning_fit(make_optimizer, root, *, epochs=3, resume=None):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True).sin()), batch_size=16)
    module = Regression(make_optimizer)
    initial = [p.detach().clone() for p in module.parameters()]
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, default_root_dir=str(root),
                                enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                                enable_checkpointing=False)
    trainer.fit(module, data, ckpt_path=resume)
    return trainer, list(module.parameters()), initial


def test_lightning_trains_like_torch_optim_and_resumes_its_checkpoint(tmp_path):
    _, expected, initial = lightning_fit(torch_adamw, tmp_path / "torch")
    trainer, got, _ = lightning_fit(dynopt_adamw, tmp_path / "dynopt")
    assert_same_training(got, expected, initial)
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr() == [LR * 0.5 ** 3]

    half, _, _ = lightning_fit(dynopt_adamw, tmp_path / "half", epochs=2)
    half.save_checkpoint(tmp_path / "half.ckpt")
    _, resumed, _ = lightning_fit(dynopt_adamw, tmp_path / "resumed", resume=str(tmp_path / "half.ckpt"))
    assert max_difference(resumed, got) == 0.0


# ------------------------------------------------------------------------------------------------ torch's own tools


def _mlp_and_batches(seed=4, steps=8):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2))
    gen = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(16, 6, generator=gen), torch.randn(16, 2, generator=gen)) for _ in range(steps)]
    return model, batches


@pytest.mark.parametrize("options", [{}, {"fused": True}, {"flat": False}], ids=["default", "fused", "reference"])
def test_grad_scaler_scales_unscales_and_skips_a_non_finite_step_like_torch_optim(options):
    """``torch.amp.GradScaler`` multiplies the loss, unscales the gradients before the step, skips the step whose
    gradients overflowed (here step 3: an inf put into one gradient) and halves its scale then. With dynopt the
    weights and the scale's history are those of the same loop with torch.optim.AdamW."""

    def train(make):
        model, batches = _mlp_and_batches()
        initial = [p.detach().clone() for p in model.parameters()]
        opt = make(model)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=2)
        scales = []
        for k, (x, y) in enumerate(batches):
            opt.zero_grad()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            if k == 3:
                model[0].weight.grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        return list(model.parameters()), initial, scales

    expected, initial, expected_scales = train(torch_adamw)
    got, _, scales = train(lambda m: dynopt_adamw(m, **options))
    assert scales == expected_scales and expected_scales[3] == expected_scales[2] / 2
    assert_same_training(got, expected, initial, steps=8)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_distributed_checkpoint_saves_and_loads_the_optimizer_state(tmp_path):
    """torch.distributed.checkpoint (``get_optimizer_state_dict`` keys the state by parameter names, ``dcp.save`` and
    ``dcp.load`` write and read it, one process here) round-trips dynopt's state: training resumed from it continues
    bit-identically, and the saved state carries torch.optim.AdamW's names. ``dcp.load`` writes into the tensors of
    the state dict it is given, which are the optimizer's own state tensors (views into dynopt's flat buffers), so
    the step after it must read them there: without ``dcp.load`` this test fails."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    def steps(model, opt, batches):
        for x, y in batches:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    model, batches = _mlp_and_batches()
    opt = dynopt_adamw(model)
    steps(model, opt, batches)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    model, batches = _mlp_and_batches()
    opt = dynopt_adamw(model)
    steps(model, opt, batches[:4])
    saved = {"model": model.state_dict(), "optim": get_optimizer_state_dict(model, opt)}
    assert set(saved["optim"]["state"]["0.weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    dcp.save(saved, checkpoint_id=str(tmp_path / "ckpt"))

    fresh, _ = _mlp_and_batches(seed=5)
    fresh_opt = dynopt_adamw(fresh)
    target = {"model": fresh.state_dict(), "optim": get_optimizer_state_dict(fresh, fresh_opt)}
    dcp.load(target, checkpoint_id=str(tmp_path / "ckpt"))
    fresh.load_state_dict(target["model"])
    set_optimizer_state_dict(fresh, fresh_opt, target["optim"])
    steps(fresh, fresh_opt, batches[4:])
    assert max_difference(fresh.parameters(), uninterrupted) == 0.0
