"""Alignment settings and the loop training shares: what trains, warm-up, EMA, precision on a
CPU, the `pbd` preset, and schedules written before these settings existed."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from peft import LoraConfig
from peft.tuners.lora import LoraModel
from pydantic import ValidationError
from typer.testing import CliRunner

from pruning.alignment import (ADAPTER, AlignmentConfig, add_adapters, align, alignment_loss, lora_targets,
                               set_trainable)
from pruning.schedule import Schedule, load_schedule
from search.cli import app
from search.spec import load_study_spec
from tadmodels.spec import TrainConfig
from tadmodels.training import Experiment, load_model
from tadmodels.training.loop import fit
from tadmodels.training.trainer import seed_everything

DROP = "backbone.blocks.1"


@pytest.fixture(scope="module")
def experiment(tiny_setting):
    spec = load_study_spec(tiny_setting)
    base, _ = load_model(spec.base_model)
    return Experiment.from_spec(spec, base)


def trainable_after_setup(model, config):
    lora = add_adapters(model.without_blocks([DROP]), config)
    set_trainable(lora.model, config)
    return lora.model, {name for name, p in lora.model.named_parameters() if p.requires_grad}


def test_what_trains_under_each_setting(experiment):
    cheap_model, cheap = trainable_after_setup(experiment.model, AlignmentConfig())
    expected = {name for name, _ in cheap_model.named_parameters()
                if "lora_" in name or name.startswith("backbone.") and (".norm" in name or ".patch_embed." in name)}
    assert cheap == expected and not any(name.startswith("detector.") for name in cheap)
    assert "backbone.blocks.0.attn.q_bias" not in cheap and "backbone.blocks.0.mlp.fc1.weight" not in cheap
    pbd_model, pbd = trainable_after_setup(experiment.model, AlignmentConfig(preset="pbd"))
    detector = {name for name, _ in pbd_model.named_parameters() if name.startswith("detector.")}
    assert detector and pbd == cheap | detector


def test_lora_init_normal_has_the_release_std(experiment):
    model = experiment.model.without_blocks([DROP])
    rank = 8  # the tiny backbone's width 32 / 4
    for init, expected in (("normal", rank ** -0.5), ("kaiming_uniform", (3 * 32) ** -0.5)):
        lora = add_adapters(model.without_blocks([]), AlignmentConfig(lora_init=init))
        a = torch.cat([m.weight.flatten() for n, m in lora.model.named_modules() if n.endswith(f"lora_A.{ADAPTER}")])
        assert a.numel() == 3 * 2 * rank * 32  # 3 blocks left, qkv and proj
        assert abs(a.std().item() - expected) < 0.05 * expected, init
        assert all(m.weight.abs().max() == 0 for n, m in lora.model.named_modules() if n.endswith(f"lora_B.{ADAPTER}"))


def toy_run(ema_decay=None, warmup_epochs=0.0, precision="fp32"):
    """`fit` on a linear layer: 4 batches per epoch, 3 epochs; the learning rate before each step
    and the weights after it, recorded through torch's global optimiser hooks."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    batches = [torch.randn(5, 3) for _ in range(4)]
    settings = SimpleNamespace(epochs=3, lr=0.1, weight_decay=0.0, warmup_epochs=warmup_epochs, grad_clip=10.0,
                               ema_decay=ema_decay, precision=precision)
    lrs, weights = [], []
    pre = register_optimizer_step_pre_hook(
        lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    post = register_optimizer_step_post_hook(
        lambda *_: weights.append(model.weight.detach().clone()))
    try:
        fit(model, batches, lambda x: ((model(x) - 1) ** 2).mean(), settings, "toy")
    finally:
        pre.remove()
        post.remove()
    return model, lrs, weights


def test_warmup_is_linear_per_step_then_cosine_to_zero():
    _, lrs, _ = toy_run(warmup_epochs=0.5)  # 2 warm-up steps of 12
    expected = [0.1 * 1 / 2, 0.1 * 2 / 2] + [0.1 * 0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    _, lrs, _ = toy_run()  # no warm-up: the cosine starts at the first step
    assert lrs == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * k / 12)) for k in range(12)], abs=1e-12)


def test_ema_replaces_the_weights_with_their_average():
    decay = 0.5
    model, _, weights = toy_run(ema_decay=decay)
    average = weights[0]  # torch's AveragedModel starts at the weights after the first step
    for w in weights[1:]:
        average = decay * average + (1 - decay) * w
    torch.testing.assert_close(model.weight.detach(), average)
    assert not torch.allclose(model.weight.detach(), weights[-1])  # not the last weights


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_a_cpu_is_exactly_fp32(experiment, precision):
    def aligned(config):
        return align(experiment.model.without_blocks([DROP]), experiment.model, experiment, config).state_dict()

    fp32, mixed = aligned(AlignmentConfig(epochs=1)), aligned(AlignmentConfig(epochs=1, precision=precision))
    assert all(torch.equal(fp32[k], mixed[k]) for k in fp32)


def test_cheap_default_is_the_alignment_loop_before_the_shared_one(experiment):
    """The default settings reproduce, bit for bit on a CPU, the loop align() ran before it moved to
    `fit`: peft's default init, AdamW, cosine from the first step, no warm-up, no EMA."""
    config = AlignmentConfig(epochs=1, lr=1e-3)
    aligned = align(experiment.model.without_blocks([DROP]), experiment.model, experiment, config).state_dict()

    student, teacher = experiment.model.without_blocks([DROP]), experiment.model.eval()
    seed_everything(experiment.spec.train.seed)
    rank = 8
    lora = LoraModel(student, LoraConfig(r=rank, lora_alpha=rank, target_modules=lora_targets(student),
                                         lora_dropout=0.0, init_lora_weights=True), ADAPTER)
    model = lora.model
    set_trainable(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.0},
                                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=config.lr)
    loader = experiment.loader(experiment.spec.data.train_subset)
    total = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
    model.train()
    for batch in loader:
        loss = alignment_loss(model, teacher, student.droppable_blocks(), batch, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
    reference = lora.merge_and_unload().state_dict()
    assert set(aligned) == set(reference)
    assert all(torch.equal(aligned[k], reference[k]) for k in reference)


def test_pbd_preset_fills_the_release_settings_and_runs_a_step_on_cpu(experiment):
    config = AlignmentConfig(preset="pbd", epochs=1)  # a field given wins over the preset
    assert (config.epochs, config.lr, config.weight_decay, config.warmup_epochs, config.ema_decay) == (1, 1e-4, 0.05, 5, 0.999)
    assert (config.precision, config.train_detector, config.lora_init, config.lora_alpha) == ("fp16", True, "normal", None)
    base = experiment.model
    before = base.state_dict()
    aligned = align(base.without_blocks([DROP]), base, experiment, config).state_dict()
    changed = {k for k in aligned if not torch.equal(aligned[k], before[k])}
    assert any(k.startswith("detector.") for k in changed)  # the detector trains under pbd
    assert "backbone.blocks.0.attn.qkv.weight" in changed and "backbone.blocks.0.mlp.fc1.weight" not in changed
    with pytest.raises(ValidationError, match="preset"):
        AlignmentConfig(preset="fast")


# The alignment section as version-1 schedules and study specs wrote it before these settings existed.
OLD_ALIGNMENT = {"epochs": 3, "lr": 0.0005, "weight_decay": 0.0, "rank": None, "teacher": "original", "task_weight": 1.0,
                 "feature_weight": 1.0, "kl_weight": 1.0, "diou_weight": 1.0, "temperature": 3.5, "grad_clip": 1.0}


def test_old_schedules_load_with_todays_behaviour_and_keep_their_identity(tmp_path):
    old = {"format": "tadprune.schedule", "version": 1, "base_fingerprint": "f" * 16, "drops": ["backbone.blocks.1"],
           "channel_ratios": {}, "alignment": OLD_ALIGNMENT,
           "selection": {"criterion": "map", "tiou": 0.5}, "results": None}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    schedule = load_schedule(path)
    assert schedule.alignment == AlignmentConfig()
    assert schedule.model_dump(mode="json")["alignment"] == OLD_ALIGNMENT  # same JSON, same cache keys and study hash
    assert "precision" not in TrainConfig().model_dump()
    pbd = Schedule(base_fingerprint="f" * 16, alignment=AlignmentConfig(preset="pbd"))
    pbd.save(tmp_path / "pbd.json")
    assert load_schedule(tmp_path / "pbd.json") == pbd


def test_compress_takes_an_alignment_preset(tiny_setting, tmp_path):
    base_dir = load_study_spec(tiny_setting).base_model
    result = CliRunner().invoke(app, [str(a) for a in (
        "compress", "--model", base_dir, "--out", tmp_path / "never", "--greedy", "--blocks", "1",
        "--align-preset", "fast", "--quiet")])
    assert result.exit_code == 2 and "preset" in result.output
    assert not (tmp_path / "never").exists()
    result = CliRunner().invoke(app, [str(a) for a in (
        "compress", "--model", base_dir, "--out", tmp_path / "pbd", "--greedy", "--blocks", "1", "--criterion", "mse",
        "--align-preset", "pbd", "--align-epochs", "1", "--quiet")])
    assert result.exit_code == 0, result.output
    alignment = load_schedule(tmp_path / "pbd" / "schedule.json").alignment
    assert alignment == AlignmentConfig(preset="pbd", epochs=1)
