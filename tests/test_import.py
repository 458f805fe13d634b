"""`tadprune import`: checkpoints written here in each released layout, converted, compared output to output.

MCG-NJU and OpenTAD state dicts carry the keys their modeling files produce (`modeling_finetune.py`,
`modeling_pretrain.py`; OpenTAD's `backbones/vit.py` on mmcv's `PatchEmbed` and `FFN`), filled with
random tensors; `reference_features` computes what those files compute from the raw tensors. The
Hugging Face checkpoints are real `transformers` models saved with `save_pretrained`.
"""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from search.cli import app
from tadmodels.checkpoints import run_import
from tadmodels.checkpoints.backbone import read_backbone_import
from tadmodels.checkpoints.files import CheckpointError
from tadmodels.models.videomae import VideoMAEBackbone, sinusoid_position_table

DIM, HEADS, PATCH, DEPTH = 32, 4, 8, 2
OPTIONS = {"num_heads": HEADS, "num_frames": 4, "img_size": 32}  # what these tiny checkpoints do not tell


def mcg_state(*, img=32, frames=4, final="fc_norm", layer_scale=False, learned_pos=False, opentad=False) -> dict:
    """Random weights under the keys MCG-NJU's ViT (or, `opentad`, OpenTAD's) gives them."""
    torch.manual_seed(0)
    tokens = (frames // 2) * (img // PATCH) ** 2
    state = {("patch_embed.projection" if opentad else "patch_embed.proj") + ".weight": torch.randn(DIM, 3, 2, PATCH, PATCH) * 0.05,
             ("patch_embed.projection" if opentad else "patch_embed.proj") + ".bias": torch.randn(DIM) * 0.1}
    fc1, fc2 = ("mlp.layers.0.0", "mlp.layers.1") if opentad else ("mlp.fc1", "mlp.fc2")
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + 0.1 * torch.randn(DIM), b + "norm1.bias": 0.1 * torch.randn(DIM),
            b + "attn.q_bias": 0.1 * torch.randn(DIM), b + "attn.v_bias": 0.1 * torch.randn(DIM),
            b + "attn.qkv.weight": 0.2 * torch.randn(3 * DIM, DIM),
            b + "attn.proj.weight": 0.2 * torch.randn(DIM, DIM), b + "attn.proj.bias": 0.1 * torch.randn(DIM),
            b + "norm2.weight": 1 + 0.1 * torch.randn(DIM), b + "norm2.bias": 0.1 * torch.randn(DIM),
            b + fc1 + ".weight": 0.2 * torch.randn(4 * DIM, DIM), b + fc1 + ".bias": 0.1 * torch.randn(4 * DIM),
            b + fc2 + ".weight": 0.1 * torch.randn(DIM, 4 * DIM), b + fc2 + ".bias": 0.1 * torch.randn(DIM)})
        if layer_scale:
            state.update({b + "gamma_1": 0.5 + torch.rand(DIM), b + "gamma_2": 0.5 + torch.rand(DIM)})
    if final != "none":
        state.update({f"{final}.weight": 1 + 0.1 * torch.randn(DIM), f"{final}.bias": 0.1 * torch.randn(DIM)})
    if learned_pos:
        state["pos_embed"] = torch.randn(1, tokens, DIM)
    if opentad:  # its sine table is a buffer of the ViT built for `img`
        state["pos_embed"] = sinusoid_position_table(tokens, DIM)[None]
    return state


def reference_features(state: dict, x: torch.Tensor, final: str, positions: torch.Tensor | None = None) -> torch.Tensor:
    """MCG-NJU's ViT from raw MCG-named tensors, pooled per tubelet step: mean over space after
    `norm`, or `fc_norm` applied to the mean (their mean-pooling head on one step), or neither."""
    g = lambda k: state[k]  # noqa: E731
    tokens = F.conv3d(x, g("patch_embed.proj.weight"), g("patch_embed.proj.bias"), stride=(2, PATCH, PATCH)).flatten(2).transpose(1, 2)
    batch, count, _ = tokens.shape
    tokens = tokens + (positions if positions is not None else sinusoid_position_table(count, DIM))
    for i in range(DEPTH):
        b = f"blocks.{i}."
        scale = lambda name: state.get(b + name, torch.ones(DIM))  # noqa: E731
        h = F.layer_norm(tokens, (DIM,), g(b + "norm1.weight"), g(b + "norm1.bias"), eps=1e-6)
        bias = torch.cat([g(b + "attn.q_bias"), torch.zeros(DIM), g(b + "attn.v_bias")])
        q, k, v = F.linear(h, g(b + "attn.qkv.weight"), bias).view(batch, count, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * (DIM // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        tokens = tokens + scale("gamma_1") * F.linear(attn.transpose(1, 2).reshape(batch, count, DIM), g(b + "attn.proj.weight"), g(b + "attn.proj.bias"))
        h = F.layer_norm(tokens, (DIM,), g(b + "norm2.weight"), g(b + "norm2.bias"), eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, g(b + "mlp.fc1.weight"), g(b + "mlp.fc1.bias"))), g(b + "mlp.fc2.weight"), g(b + "mlp.fc2.bias"))
        tokens = tokens + scale("gamma_2") * h
    if final == "norm":
        tokens = F.layer_norm(tokens, (DIM,), g("norm.weight"), g("norm.bias"), eps=1e-6)
    means = tokens.view(batch, x.shape[2] // 2, -1, DIM).mean(2)
    return F.layer_norm(means, (DIM,), g("fc_norm.weight"), g("fc_norm.bias"), eps=1e-6) if final == "fc_norm" else means


def imported(directory) -> VideoMAEBackbone:
    config, state = read_backbone_import(directory)
    backbone = VideoMAEBackbone(config).eval()
    backbone.load_state_dict(state)
    return backbone


def report_of(directory) -> dict:
    return json.loads((directory / "import_report.json").read_text())


def assert_every_key_accounted(report: dict, source_keys: set[str], backbone: VideoMAEBackbone) -> None:
    sources = [record["source"] for record in report["keys"]]
    assert sorted(sources) == sorted(source_keys)
    assert {record["target"] for record in report["keys"]} - {None} == set(backbone.state_dict())


def test_fine_tuned_training_checkpoint_with_layer_scale_loads_exactly(tmp_path):
    """A checkpoint as run_class_finetuning.py saves it: model, optimizer, epoch, scaler and its args."""
    state = mcg_state(final="fc_norm", layer_scale=True) | {"head.weight": torch.randn(7, DIM), "head.bias": torch.randn(7)}
    args = argparse.Namespace(model="vit_small_patch16_224", input_size=32, num_frames=4, tubelet_size=2, lr=1e-3)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 9, "scaler": {}, "args": args},
               tmp_path / "checkpoint-9.pth")
    report = run_import("videomae", tmp_path / "checkpoint-9.pth", tmp_path / "out", OPTIONS)
    backbone = imported(tmp_path / "out")
    assert (backbone.config.final_norm, backbone.config.layer_scale, backbone.config.pos_embed) == ("fc_norm", True, "sinusoid")
    x = torch.randn(2, 3, 4, 32, 32)
    assert (backbone(x) - reference_features(state, x, "fc_norm")).abs().max() < 1e-5
    assert_every_key_accounted(report_of(tmp_path / "out"), set(state) | {"optimizer", "epoch", "scaler", "args"}, backbone)
    assert any("vit_small_patch16_224" in note for note in report.notes)


def test_pretraining_checkpoint_under_encoder_prefix_drops_the_decoder(tmp_path):
    encoder = mcg_state(final="norm")
    state = {f"encoder.{k}": v for k, v in encoder.items()} | {
        "decoder.blocks.0.norm1.weight": torch.ones(16), "decoder.norm.weight": torch.ones(16),
        "decoder.head.weight": torch.zeros(1536, 16), "encoder_to_decoder.weight": torch.zeros(16, DIM),
        "mask_token": torch.zeros(1, 1, 16)}
    torch.save({"model": state}, tmp_path / "pretrain.pth")
    run_import("videomae", tmp_path / "pretrain.pth", tmp_path / "out", OPTIONS)
    backbone = imported(tmp_path / "out")
    x = torch.randn(1, 3, 4, 32, 32)
    assert (backbone(x) - reference_features(encoder, x, "norm")).abs().max() < 1e-5
    decoder = [r for r in report_of(tmp_path / "out")["keys"] if r["source"].startswith(("decoder", "mask", "encoder_to"))]
    assert len(decoder) == 5 and {r["how"] for r in decoder} == {"not imported: pre-training decoder"}


def test_learned_table_is_resized_as_the_fine_tuning_script_does(tmp_path):
    """DeepSpeed's `module` entry; a learned 4x4 table at 32 px imported for 16 px frames."""
    state = mcg_state(final="fc_norm", learned_pos=True)
    torch.save({"module": state}, tmp_path / "mp_rank_00_model_states.pt")
    run_import("videomae", tmp_path / "mp_rank_00_model_states.pt", tmp_path / "out",
               {"num_heads": HEADS, "num_frames": 4, "img_size": 16})
    backbone = imported(tmp_path / "out")
    grids = state["pos_embed"].reshape(2, 4, 4, DIM).permute(0, 3, 1, 2)
    resized = F.interpolate(grids, size=(2, 2), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(8, DIM)
    torch.testing.assert_close(backbone.pos_embed, resized)
    x = torch.randn(1, 3, 4, 16, 16)
    assert (backbone(x) - reference_features(state, x, "fc_norm", positions=resized)).abs().max() < 1e-5


def test_learned_table_at_its_own_size_is_used_as_it_is(tmp_path):
    state = mcg_state(final="fc_norm", learned_pos=True)
    torch.save(state, tmp_path / "ft.pth")
    run_import("videomae", tmp_path / "ft.pth", tmp_path / "out", {"num_heads": HEADS, "num_frames": 4})
    backbone = imported(tmp_path / "out")
    assert backbone.config.pos_embed == "learned" and backbone.config.img_size == 32
    x = torch.randn(1, 3, 4, 32, 32)
    assert (backbone(x) - reference_features(state, x, "fc_norm", positions=state["pos_embed"][0])).abs().max() < 1e-5


def test_fc_norm_can_be_dropped_as_opentad_and_pbd_do(tmp_path):
    state = mcg_state(final="fc_norm")
    torch.save(state, tmp_path / "ft.pth")
    run_import("videomae", tmp_path / "ft.pth", tmp_path / "out", OPTIONS | {"fc_norm": False})
    backbone = imported(tmp_path / "out")
    assert backbone.config.final_norm == "none"
    x = torch.randn(1, 3, 4, 32, 32)
    assert (backbone(x) - reference_features(state, x, "none")).abs().max() < 1e-5
    dropped = [r for r in report_of(tmp_path / "out")["keys"] if r["source"].startswith("fc_norm")]
    assert [r["target"] for r in dropped] == [None, None] and "--no-fc-norm" in dropped[0]["how"]


def test_opentad_backbone_resizes_its_224px_style_table_and_pools_without_fc_norm(tmp_path):
    """OpenTAD's ViT built for 32 px (its 224) and run on 16 px frames (its 160): the stored sine
    table is reshaped per step and resized bicubically, as its forward does; fc_norm is skipped."""
    vit = mcg_state(final="fc_norm", opentad=True)
    state = {f"backbone.{k}": v for k, v in vit.items()} | {"cls_head.fc_cls.weight": torch.zeros(5, DIM),
                                                             "cls_head.fc_cls.bias": torch.zeros(5)}
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, tmp_path / "vit-small_k400.pth")
    run_import("videomae", tmp_path / "vit-small_k400.pth", tmp_path / "out", {"num_heads": HEADS, "num_frames": 4, "img_size": 16})
    backbone = imported(tmp_path / "out")
    assert (backbone.config.final_norm, backbone.config.pos_table_img_size) == ("none", 32)
    table = vit["pos_embed"].reshape(-1, 4, 4, DIM).permute(0, 3, 1, 2)  # OpenTAD's forward, step by step
    table = F.interpolate(table, size=(2, 2), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(1, 2).reshape(1, -1, DIM)
    renamed = {k.replace("patch_embed.projection", "patch_embed.proj").replace("mlp.layers.0.0", "mlp.fc1")
               .replace("mlp.layers.1", "mlp.fc2"): v for k, v in vit.items()}
    x = torch.randn(1, 3, 4, 16, 16)
    assert (backbone(x) - reference_features(renamed, x, "none", positions=table[0])).abs().max() < 1e-5
    hows = {r["source"]: r["how"] for r in report_of(tmp_path / "out")["keys"]}
    assert "fixed sine table (for 32 px)" in hows["backbone.pos_embed"] and "classifier" in hows["cls_head.fc_cls.weight"]


@pytest.fixture(scope="module")
def hf_models():
    transformers = pytest.importorskip("transformers")
    config = dict(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * DIM,
                  image_size=32, patch_size=PATCH, num_frames=4, tubelet_size=2)
    torch.manual_seed(0)
    plain = transformers.VideoMAEModel(transformers.VideoMAEConfig(**config, use_mean_pooling=False)).eval()
    classifier = transformers.VideoMAEForVideoClassification(
        transformers.VideoMAEConfig(**config, use_mean_pooling=True, num_labels=3)).eval()
    for model in (plain, classifier):  # give every LayerNorm and bias a visible effect
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                torch.nn.init.normal_(parameter, mean=1.0 if name.endswith("weight") else 0.0, std=0.2)
    return plain, classifier


def test_hugging_face_model_matches_output_to_output(tmp_path, hf_models):
    plain, _ = hf_models
    plain.save_pretrained(tmp_path / "hf")  # safetensors
    run_import("videomae", tmp_path / "hf", tmp_path / "out")
    backbone = imported(tmp_path / "out")
    assert (backbone.config.norm_eps, backbone.config.final_norm) == (1e-12, "norm")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        tokens = plain(pixel_values=x.transpose(1, 2)).last_hidden_state
        assert (backbone(x) - tokens.view(2, 2, 16, DIM).mean(2)).abs().max() < 1e-5
    qkv = backbone.blocks["1"].attn.qkv.weight
    attention = plain.encoder.layer[1].attention.attention
    torch.testing.assert_close(qkv, torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
    hows = {r["source"]: (r["target"], r["how"]) for r in report_of(tmp_path / "out")["keys"]}
    assert hows["encoder.layer.1.attention.attention.q_bias"] == ("blocks.1.attn.q_bias", "renamed")  # as hub files name it
    with pytest.raises(CheckpointError, match="without their config.json"):  # its epsilon and heads are there
        run_import("videomae", tmp_path / "hf" / "model.safetensors", tmp_path / "out2")


def test_hugging_face_classifier_bin_gives_its_own_pooled_feature(tmp_path, hf_models):
    _, classifier = hf_models
    # transformers 5 writes safetensors only; a .bin is its state dict saved by torch, with the
    # in-memory names (query.bias where saved files have q_bias)
    classifier.config.save_pretrained(tmp_path / "hf")
    torch.save(classifier.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    run_import("videomae", tmp_path / "hf", tmp_path / "out")
    backbone = imported(tmp_path / "out")
    assert (backbone.config.final_norm, backbone.config.fc_norm_eps) == ("fc_norm", 1e-5)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():  # the classifier's own head (fc_norm after the mean), on each step's tokens
        tokens = classifier.videomae(pixel_values=x.transpose(1, 2)).last_hidden_state
        per_step = classifier.fc_norm(tokens.view(2, 2, 16, DIM).mean(2))
    assert (backbone(x) - per_step).abs().max() < 1e-5
    hows = {r["source"]: r["how"] for r in report_of(tmp_path / "out")["keys"]}
    assert hows["videomae.encoder.layer.0.attention.attention.key.weight"] == "k rows of qkv"
    assert hows["classifier.weight"] == "not imported: classifier head"


class Custom:
    pass


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo imported",))


@pytest.mark.parametrize("extra, name", [(Custom(), "Custom"), (RunsCode(), "system")])
def test_arbitrary_pickles_are_refused(tmp_path, extra, name):
    torch.save({"model": mcg_state(), "args": extra}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=f"refused: it needs the Python object .*{name}.*weights_only=True"):
        run_import("videomae", tmp_path / "bad.pth", tmp_path / "out", {"num_heads": HEADS})
    assert not (tmp_path / "out").exists()


def test_what_does_not_fit_is_refused_by_name(tmp_path):
    def attempt(state, message, **options):
        torch.save(state, tmp_path / "ckpt.pth")
        with pytest.raises(CheckpointError, match=message):
            run_import("videomae", tmp_path / "ckpt.pth", tmp_path / "out", OPTIONS | options)
        assert not (tmp_path / "out").exists()

    attempt(mcg_state() | {"blocks.0.attn.rel_pos_bias": torch.zeros(3)}, "does not know .*blocks.0.attn.rel_pos_bias")
    missing = mcg_state()
    del missing["blocks.1.mlp.fc2.bias"]
    attempt(missing, "missing keys: blocks.1.mlp.fc2.bias")
    attempt(mcg_state() | {"blocks.1.mlp.fc2.weight": torch.zeros(DIM, 3 * DIM)}, r"shapes differ: blocks.1.mlp.fc2.weight \(32, 96\)")
    attempt(mcg_state(), "does not match preset S: depth: checkpoint 2, preset S 12", preset="S")
    partial_scale = mcg_state(layer_scale=True)
    del partial_scale["blocks.1.gamma_1"], partial_scale["blocks.1.gamma_2"]
    attempt(partial_scale, r"LayerScale \(gamma_1/gamma_2\) in blocks \[0\] only")
    attempt({"model": {"x": 1}}, "no weights under model / module / state_dict")


def test_import_cli_writes_a_backbone_import_and_refuses_to_overwrite(tmp_path):
    torch.save({"model": mcg_state(final="fc_norm")}, tmp_path / "ft.pth")
    runner = CliRunner()
    command = ["import", "videomae", str(tmp_path / "ft.pth"), "--out", str(tmp_path / "out"), "--num-heads", "4", "--num-frames", "4", "--img-size", "32"]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "MCG-NJU" in result.output and "not imported: classifier head" not in result.output
    assert yaml.safe_load((tmp_path / "out" / "backbone.yaml").read_text())["final_norm"] == "fc_norm"
    before = (tmp_path / "out" / "backbone.safetensors").read_bytes()
    again = runner.invoke(app, command)
    assert again.exit_code == 2 and "already exists" in again.output
    assert (tmp_path / "out" / "backbone.safetensors").read_bytes() == before
    bad = runner.invoke(app, ["import", "videomae", str(tmp_path / "ft.pth"), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "give --num-heads" in bad.output


def backbone_import_of_base(tiny_setting, tmp_path):
    """The tiny base model's backbone written as an MCG-NJU pre-training checkpoint, then imported."""
    from tadmodels.training import load_model

    model, spec = load_model(tiny_setting.parent / "base")
    state = {f"encoder.{k}": v for k, v in model.backbone.state_dict().items()}
    torch.save({"model": state | {"mask_token": torch.zeros(1, 1, 8)}}, tmp_path / "pretrain.pth")
    backbone = spec.model.backbone
    run_import("videomae", tmp_path / "pretrain.pth", tmp_path / "imported",
               {"num_heads": backbone.num_heads, "img_size": backbone.img_size, "num_frames": backbone.num_frames})
    return model, tmp_path / "imported"


def test_train_init_takes_a_backbone_import_into_the_specs_model(tiny_setting, tmp_path):
    from search.spec import load_any_spec
    from tadmodels.models import TADModel
    from tadmodels.training.trainer import initial_model, seed_everything

    base, directory = backbone_import_of_base(tiny_setting, tmp_path)
    spec = load_any_spec(tiny_setting)
    model = initial_model(spec, directory)
    for key, value in base.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    seed_everything(spec.train.seed)
    fresh = TADModel(spec.model)
    assert all(torch.equal(a, b) for a, b in zip(model.detector.state_dict().values(), fresh.detector.state_dict().values()))

    other = spec.model_copy(update={"model": spec.model.model_copy(update={
        "backbone": spec.model.backbone.model_copy(update={"final_norm": "fc_norm", "depth": 3})})})
    with pytest.raises(ValueError, match=r"differs from the spec's model.backbone .*depth: 3 -> 4; final_norm: 'fc_norm' -> 'norm'"):
        initial_model(other, directory)


def test_train_init_takes_a_model_directory_and_refuses_another_architecture(tiny_setting):
    from search.spec import load_any_spec
    from tadmodels.training import load_model
    from tadmodels.training.trainer import initial_model

    spec = load_any_spec(tiny_setting)
    base, _ = load_model(tiny_setting.parent / "base")
    model = initial_model(spec, tiny_setting.parent / "base")
    assert model.fingerprint() == base.fingerprint()
    dropped = spec.model_copy(update={"model": spec.model.model_copy(update={"dropped": ["backbone.blocks.1"]})})
    with pytest.raises(ValueError, match=r"differs from the spec's model .*dropped: \['backbone.blocks.1'\] -> \[\]"):
        initial_model(dropped, tiny_setting.parent / "base")


def test_model_directories_load_strictly_and_a_backbone_import_is_not_one(tiny_setting, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from tadmodels.training import load_model

    _, directory = backbone_import_of_base(tiny_setting, tmp_path)
    with pytest.raises(ValueError, match="a backbone import, not a model; .*--init"):
        load_model(directory)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_setting.parent / "base", copy)
    state = load_file(str(copy / "model.safetensors"))
    state["detector.extra"] = torch.zeros(1)
    del state["backbone.blocks.0.attn.q_bias"]
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="nothing loaded. missing keys: backbone.blocks.0.attn.q_bias; unexpected keys: detector.extra"):
        load_model(copy)


def test_train_cli_starts_from_a_backbone_import(tiny_setting, tmp_path):
    from tadmodels.training import load_model

    base, directory = backbone_import_of_base(tiny_setting, tmp_path)
    result = CliRunner().invoke(app, ["train", str(tiny_setting), "--init", str(directory), "--out", str(tmp_path / "trained"), "--quiet"])
    assert result.exit_code == 0, result.output
    trained, _ = load_model(tmp_path / "trained")
    assert trained.architecture == base.architecture
    bad = CliRunner().invoke(app, ["train", str(tiny_setting), "--init", str(tmp_path), "--out", str(tmp_path / "t2")])
    assert bad.exit_code == 2 and "config.yaml: missing" in " ".join(bad.output.split())
