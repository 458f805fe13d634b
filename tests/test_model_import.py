"""`tadprune import actionformer|opentad`: full-model checkpoints written here in the layouts the
ActionFormer release and OpenTAD / PBD save, converted into model directories that load, compute
what the source weights compute, and go through `compress` and `profile`."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from search.cli import app
from tadmodels.checkpoints import run_import
from tadmodels.checkpoints.actionformer import load_release_config, release_detector_config
from tadmodels.checkpoints.files import CheckpointError
from tadmodels.data import generate
from tadmodels.data.formats import load_annotations, write_annotations
from tadmodels.models.actionformer import ActionFormer
from tadmodels.training import load_model

CLASSES, CHANNELS = 4, 64  # the demo-features preset's
RELEASE_CONFIG = {
    "dataset_name": "thumos", "train_split": ["validation"], "val_split": ["test"],
    "dataset": {"json_file": "./data/tiny/annotations/tiny.json", "feat_folder": "./data/tiny/i3d", "file_ext": ".npy",
                "num_classes": CLASSES, "input_dim": CHANNELS, "feat_stride": 1, "num_frames": 1, "max_seq_len": 64},
    "model": {"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_head": 2, "n_mha_win_size": 5, "backbone_arch": [2, 1, 3],
              "regression_range": [[0, 4], [4, 8], [8, 16], [16, 10000]]},
    "opt": {"learning_rate": 1e-3, "epochs": 1, "warmup_epochs": 0, "weight_decay": 0.05},
    "loader": {"batch_size": 2},
    "train_cfg": {"init_loss_norm": 100, "clip_grad_l2norm": 1.0, "droppath": 0.1},
    "test_cfg": {"voting_thresh": 0.7, "pre_nms_topk": 200, "max_seg_num": 50, "min_score": 0.001},
}


def trained_like(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's weights moved away from their initial values (which leave most of it out of the outputs)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in module.state_dict().items()}


def write_release_checkpoint(directory: Path, config: dict = RELEASE_CONFIG, extra: dict | None = None):
    """A release-layout `.pth.tar` (what its train.py saves) and its YAML; returns the paths and the
    detector holding the EMA weights."""
    config_path = directory / "tiny_i3d.yaml"
    config_path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    detector = ActionFormer(CHANNELS, release_detector_config(load_release_config(config_path)))
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3)
    detector(torch.randn(1, CHANNELS, 64), torch.ones(1, 64, dtype=torch.bool)).cls_logits.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    raw, ema = trained_like(detector, 1), trained_like(detector, 2)
    checkpoint = {"epoch": 30, "state_dict": {f"module.{k}": v for k, v in raw.items()},
                  "scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict(),
                  "state_dict_ema": {f"module.{k}": v for k, v in ema.items()}, **(extra or {})}
    path = directory / "epoch_030.pth.tar"
    torch.save(checkpoint, path)
    detector.load_state_dict(ema)
    return path, config_path, detector.eval()


def test_release_checkpoint_imports_as_a_model_that_computes_the_same(tmp_path):
    source, config, detector = write_release_checkpoint(tmp_path)
    report = run_import("actionformer", source, tmp_path / "model", {"config": config})
    model, spec = load_model(tmp_path / "model")
    assert model.architecture.input_dim == CHANNELS and model.backbone is None
    # The release pads every video to max_seq_len at test time (and longer ones to its max_div_factor: 8 x 4).
    assert (spec.model.detector.pad_min_length, spec.model.detector.pad_multiple) == (64, 32)
    features = torch.randn(2, 96, CHANNELS)
    mask = torch.arange(96)[None] < torch.tensor([[96], [41]])
    with torch.no_grad():
        ours, theirs = model(features, mask), detector(features.transpose(1, 2), mask)
    assert ours.cls_logits.shape[1] == 96 + 48 + 24 + 12
    assert torch.equal(ours.cls_logits, theirs.cls_logits) and torch.equal(ours.offsets, theirs.offsets)
    # A video shorter than max_seq_len runs as the release runs it: zero-padded to 64 positions.
    unpadded = ActionFormer(CHANNELS, detector.config.model_copy(update={"pad_min_length": None})).eval()
    unpadded.load_state_dict(detector.state_dict())
    short, padded = features[:, :32], torch.cat([features[:, :32], torch.zeros(2, 32, CHANNELS)], dim=1)
    with torch.no_grad():
        ours, theirs = model(short, mask[:, :32]), unpadded(padded.transpose(1, 2), torch.cat([mask[:, :32], mask[:, :32] & False], 1))
        plain = unpadded(short.transpose(1, 2), mask[:, :32])
    assert ours.cls_logits.shape[1] == 64 + 32 + 16 + 8 and torch.equal(ours.cls_logits, theirs.cls_logits)
    assert not torch.equal(ours.cls_logits[ours.valid], plain.cls_logits[plain.valid])  # the padding shows
    # Every key of the file is accounted for: the EMA weights imported, the rest named and left out.
    records = {record["source"]: record for record in json.loads((tmp_path / "model" / "import_report.json").read_text())["keys"]}
    assert {k for k, r in records.items() if r["target"]} == {f"module.{k}" for k in detector.state_dict()}
    assert {"epoch", "optimizer", "scheduler", "state_dict.*"} <= set(records)
    assert all(r["target"] == "detector." + r["source"].removeprefix("module.") for r in records.values() if r["target"])
    # The data section comes from the config: grid geometry, subsets, where the release ran from.
    assert (spec.data.root, spec.data.annotations, spec.data.inputs_dir) == (Path("data/tiny"), "annotations/tiny.json", "i3d")
    assert (spec.data.feature_stride, spec.data.clip_length, spec.data.max_seq_len) == (1, 1, 64)
    assert (spec.data.train_subset, spec.data.test_subset, spec.name) == ("validation", "test", "tiny_i3d")
    assert spec.model.detector.test.voting_thresh == 0.7 and spec.model.detector.test.min_score == 0.001
    assert spec.model.detector.train.init_loss_norm == 100 and report.importer == "actionformer"


def test_release_raw_weights_on_request(tmp_path):
    source, config, _ = write_release_checkpoint(tmp_path)
    run_import("actionformer", source, tmp_path / "model", {"config": config, "state_key": "state_dict"})
    raw = torch.load(source, weights_only=True)["state_dict"]
    model, _ = load_model(tmp_path / "model")
    assert all(torch.equal(model.state_dict()[f"detector.{k.removeprefix('module.')}"], v) for k, v in raw.items())


@pytest.mark.parametrize("damage, message", [
    (lambda state: state.pop("module.cls_head.cls_head.conv.bias"), "missing keys: detector.cls_head.cls_head.conv.bias"),
    (lambda state: state.update({"module.cls_head.extra.weight": torch.zeros(1)}), "unexpected keys: detector.cls_head.extra.weight"),
    (lambda state: state.update({"module.lora.weight": torch.zeros(1)}), "keys this importer does not know"),
    (lambda state: state.update({"module.neck.fpn_norms.0.weight": torch.zeros(1, 3, 1)}),
     "shapes differ: detector.neck.fpn_norms.0.weight (1, 3, 1) (expected (1, 16, 1))"),
])
def test_release_import_refuses_keys_that_do_not_fit_by_name(tmp_path, damage, message):
    source, config, _ = write_release_checkpoint(tmp_path)
    checkpoint = torch.load(source, weights_only=True)
    damage(checkpoint["state_dict_ema"])
    torch.save(checkpoint, source)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_import("actionformer", source, tmp_path / "model", {"config": config})
    assert not (tmp_path / "model").exists()


def test_release_import_refuses_pickled_objects_and_unsupported_configs(tmp_path):
    source, config, _ = write_release_checkpoint(tmp_path, extra={"args": argparse.Namespace(lr=1)})
    with pytest.raises(CheckpointError, match="needs the Python object argparse.Namespace"):
        run_import("actionformer", source, tmp_path / "model", {"config": config})
    source, config, _ = write_release_checkpoint(tmp_path)
    for section, change, message in (("model", {"use_rel_pe": True}, "model.use_rel_pe"),
                                     ("model", {"n_mha_size": 9}, "keys the release's LocPointTransformer does not take: n_mha_size"),
                                     ("dataset", {"force_upsampling": True}, "dataset.force_upsampling")):
        changed = {**RELEASE_CONFIG, section: {**RELEASE_CONFIG[section], **change}}
        config.write_text(yaml.safe_dump(changed))
        with pytest.raises(CheckpointError, match=message):
            run_import("actionformer", source, tmp_path / "model", {"config": config})


def fast_latency(model_dir: Path) -> None:
    """Fewer timing rounds than a real run wants, so that the test stays short."""
    path = model_dir / "config.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["eval"]["latency"] = {"min_repeats": 2, "max_repeats": 2, "warmup": 0}
    spec["train"]["threads"] = 1
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def test_imported_release_model_compresses_from_the_cli(tmp_path):
    data = generate("demo-features", tmp_path / "data", max_videos=3)
    source, config, _ = write_release_checkpoint(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["import", "actionformer", str(source), "--config", str(config), "--out",
                                 str(tmp_path / "model"), "--data-root", str(data), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    assert "copied (the release's module tree)" in result.output
    fast_latency(tmp_path / "model")
    result = runner.invoke(app, ["compress", "--model", str(tmp_path / "model"), "--greedy", "--blocks", "1",
                                 "--criterion", "mse", "--align-epochs", "1", "--out", str(tmp_path / "small"), "--quiet"])
    assert result.exit_code == 0, result.output
    compressed, _ = load_model(tmp_path / "small")
    assert len(compressed.architecture.dropped) == 1
    # The CLI refuses a second import into the same directory, and a missing --config, with status 2.
    again = runner.invoke(app, ["import", "actionformer", str(source), "--config", str(config), "--out", str(tmp_path / "model")])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(app, ["import", "actionformer", str(source), "--out", str(tmp_path / "m2")]).exit_code == 2


# OpenTAD / PBD: fixtures written by their own code (benchmarks/opentad_fixture.py): the weights under
# their names, inputs, and what their `forward_test` and `post_processing` give.
OPENTAD = Path(__file__).parent / "fixtures" / "opentad"


def opentad_case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    tensors = load_file(str(OPENTAD / f"{name}.safetensors"))
    weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
    return weights, tensors, json.loads((OPENTAD / f"{name}.json").read_text())


def write_opentad_checkpoint(path: Path, weights: dict[str, torch.Tensor], ema: bool) -> Path:
    """What OpenTAD's training saves: the DDP model's weights under `module.`, the EMA's without."""
    other = {k: torch.zeros_like(v) for k, v in weights.items()}  # the entry that must not be taken
    torch.save({"epoch": 60, "state_dict": {f"module.{k}": v for k, v in (other if ema else weights).items()},
                "state_dict_ema": weights if ema else other}, path)
    return path


def import_opentad(tmp_path: Path, name: str, weights: dict, **options) -> Path:
    source = write_opentad_checkpoint(tmp_path / f"{name}.pth", weights, ema=name == "student_e2e")
    run_import("opentad", source, tmp_path / name, {"config": OPENTAD / f"{name}.py",
                                                   "class_map": OPENTAD / "category_idx.txt", **options})
    return tmp_path / name


@pytest.mark.parametrize("name", ["student_e2e", "features"])
def test_opentad_checkpoint_computes_what_opentad_computes(tmp_path, name):
    weights, tensors, description = opentad_case(name)
    model, spec = load_model(import_opentad(tmp_path, name, weights))
    with torch.no_grad():
        output = model(tensors["inputs"], tensors["masks"])
    probs, points = output.cls_logits.sigmoid(), output.points
    for b in range(len(description["valid"])):
        valid = output.valid[b]
        offsets, positions, strides = output.offsets[b][valid], points.positions[valid], points.strides[valid]
        proposals = torch.stack([positions - offsets[:, 0] * strides, positions + offsets[:, 1] * strides], dim=-1)
        torch.testing.assert_close(probs[b][valid], tensors[f"scores.{b}"], rtol=0, atol=1e-6)
        torch.testing.assert_close(proposals, tensors[f"proposals.{b}"], rtol=0, atol=2e-5)
    # Their post-processing (one window, NMS over it, then seconds = positions here, clipped at 0 as
    # tadprune clips to the video) rounds segments to 2 decimals, scores to 4: both lists rounded so,
    # in one order (label, score, start, end), agree to the last digit. `top40` makes the top-k bind.
    for variant, settings in description["variants"].items():
        for b, ours in enumerate(model.detector.detect(output, spec.model.detector.test.model_copy(update=settings))):
            rounded = sorted(zip(ours.labels.tolist(), [-round(x, 4) for x in ours.scores.tolist()],
                                 *[[round(x, 2) for x in column] for column in ours.segments.clamp(min=0).T.tolist()]))
            found = {f: tensors[f"detections.{variant}.{b}.{f}"] for f in ("labels", "scores", "segments")}
            theirs = sorted(zip(found["labels"].tolist(), (-found["scores"]).tolist(), *found["segments"].T.tolist()))
            assert len(rounded) == len(theirs)
            torch.testing.assert_close(torch.tensor(rounded), torch.tensor(theirs), rtol=0, atol=1e-6)
    assert spec.data.labels == description["labels"]


def test_pbd_student_import_merges_lora_and_names_the_dropped_block(tmp_path):
    weights, _, _ = opentad_case("student_e2e")
    directory = import_opentad(tmp_path, "student_e2e", weights)
    model, spec = load_model(directory)
    assert spec.model.dropped == ["backbone.blocks.1"] and model.droppable_blocks() == ["backbone.blocks.0", "backbone.blocks.2"]
    assert spec.model.feature_upsample == 2 and model.temporal_stride == 1 and spec.model.backbone.img_size == 24
    detector = spec.model.detector
    assert (detector.conv_norm_eps, detector.mask_conv_outputs, detector.pad_min_length, detector.window) == (1e-6, True, 32, -1)
    root = "backbone.model.backbone.blocks.2.attn."
    a, b = weights[root + "lora_qkv.A"], weights[root + "lora_qkv.B"]
    assert torch.equal(model.state_dict()["backbone.blocks.2.attn.qkv.weight"], weights[root + "qkv.weight"] + (a @ b).T)
    report = json.loads((directory / "import_report.json").read_text())
    lora = [r for r in report["keys"] if "lora_" in r["source"]]
    assert len(lora) == 8 and all(r["how"].startswith("LoRA merged") for r in lora)
    assert {r["source"] for r in report["keys"]} >= set(weights)


@pytest.mark.parametrize("damage, message", [
    (lambda w: w.pop("backbone.model.backbone.blocks.2.attn.lora_proj.B"), "LoRA of block 2 proj"),
    (lambda w: w.pop("projection.branch.0.ln1.bias"), "missing keys: detector.backbone.branch.0.ln1.bias"),
    (lambda w: w.update({"projection.branch.0.attn.rel_pe": torch.zeros(3)}), "does not know.*projection.branch.0.attn.rel_pe"),
    (lambda w: w.update({"backbone.model.backbone.blocks.0.mlp.layers.0.0.linear.weight": torch.zeros(3)}),
     "does not know.*blocks.0.mlp.layers.0.0.linear.weight"),
    (lambda w: [w.pop(k) for k in list(w) if k.startswith("backbone.model.backbone.blocks.2.")],
     r"the config drops blocks \[1\] but the weights lack \[1, 2\]"),
])
def test_opentad_import_refuses_what_does_not_fit_by_name(tmp_path, damage, message):
    weights, _, _ = opentad_case("student_e2e")
    damage(weights)
    with pytest.raises(CheckpointError, match=message):
        import_opentad(tmp_path, "student_e2e", weights)
    assert not (tmp_path / "student_e2e").exists()


def test_opentad_config_constructs_it_does_not_read_are_refused(tmp_path):
    weights, _, _ = opentad_case("features")
    for base in ("base_model.py", "thumos_test.py"):
        (tmp_path / base).write_text((OPENTAD / base).read_text())
    for line, construct in (("import os", "Import"), ("window_size = open('x').read()", "Call `open"),
                            ("window_size = __import__('os')", "Call `__import__"), ("window_size = model.x", "Attribute")):
        config = tmp_path / "features.py"
        config.write_text((OPENTAD / "features.py").read_text() + line + "\n")
        with pytest.raises(CheckpointError, match=f"features.py:\\d+: refused {construct}"):
            run_import("opentad", write_opentad_checkpoint(tmp_path / "c.pth", weights, ema=False), tmp_path / "m",
                       {"config": config, "class_map": OPENTAD / "category_idx.txt"})


def test_imported_end_to_end_model_profiles_from_the_cli(tmp_path):
    weights, _, _ = opentad_case("student_e2e")
    directory = import_opentad(tmp_path, "student_e2e", weights)
    result = CliRunner().invoke(app, ["profile", str(directory), "--device", "cpu", "--warmup", "0", "--min-repeats", "2",
                                      "--max-repeats", "2", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["macs"] > 0 and figures["params"] == sum(p.numel() for p in load_model(directory)[0].parameters())


# The data section of an OpenTAD import: its test windows, and end to end the videos it decodes.
FIXTURE_CLASSES = (OPENTAD / "category_idx.txt").read_text().split()


def opentad_config_variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The fixture config `name` and its bases copied, `old` replaced by `new` in the one that has it."""
    copies = {source.name: source.read_text() for source in OPENTAD.glob("*.py")}
    edited = next((file for file in (f"{name}.py", *sorted(copies)) if old in copies[file]), None)
    assert edited is not None, f"{old!r} is in none of {sorted(copies)}"
    for file, text in copies.items():
        (tmp_path / file).write_text(text.replace(old, new) if file == edited else text)
    return tmp_path / f"{name}.py"


def write_fixture_annotations(root: Path, videos: list, inputs: str, fps: dict[str, float] | None = None) -> Path:
    """A dataset root with the videos labelled with the fixtures' three classes (the demo's four folded
    onto them), the fps of some changed, and an `inputs` directory."""
    records = [replace(v, labels=v.labels % len(FIXTURE_CLASSES), fps=(fps or {}).get(v.video_id, v.fps)) for v in videos]
    (root / inputs).mkdir(parents=True, exist_ok=True)
    write_annotations(root / "annotations.json", records, FIXTURE_CLASSES)
    return root


@pytest.fixture(scope="module")
def demo_videos(tmp_path_factory) -> Path:
    """Two demo videos per subset as H.264 files at 8 fps, 32 px."""
    root = generate("demo-videos", tmp_path_factory.mktemp("demo") / "data", max_videos=2)
    return write_fixture_annotations(root, list(load_annotations(root / "annotations.json").videos.values()), "videos")


@pytest.mark.parametrize("old, new, window", [
    ("", "", (64, 0.5)),
    ("window_overlap_ratio=0.5,", "", (64, 0.25)),  # SlidingWindowDataset's default overlap
    ('type="ThumosSlidingDataset"', 'type="ThumosPaddingDataset"', (None, 0.5)),  # whole videos
])
def test_opentad_import_tests_in_the_config_windows(tmp_path, old, new, window):
    weights, _, _ = opentad_case("features")
    config = opentad_config_variant(tmp_path, "features", old, new)
    directory = import_opentad(tmp_path, "features", weights, config=config)
    _, spec = load_model(directory)
    assert (spec.data.inference_window, spec.data.inference_overlap) == window
    assert (spec.data.kind, spec.data.feature_stride, spec.data.fps) == ("features", 4, None)
    with pytest.raises(CheckpointError, match="--fps 30: a frame rate to decode videos at, and this model reads features"):
        import_opentad(tmp_path, "features", weights, config=config, fps=30)
    notes = json.loads((directory / "import_report.json").read_text())["notes"]
    assert any(n.startswith("test windows of 64 positions") for n in notes) == (window[0] is not None)


def test_opentad_end_to_end_import_decodes_the_videos_as_its_test_pipeline(tmp_path, demo_videos):
    weights, _, _ = opentad_case("student_e2e")
    directory = import_opentad(tmp_path, "student_e2e", weights, data_root=demo_videos)
    _, spec = load_model(directory)
    # Every 4th frame (snippet stride 4) of the 8 fps videos; Resize(-1, 24) and CenterCrop(24);
    # windows of 32 snippets, one grid position per frame (384 ViT steps interpolated to 768 in PBD's).
    data = spec.data
    assert (data.kind, data.root, data.inputs_path, data.fps) == ("videos", demo_videos, demo_videos / "videos", 2.0)
    assert (data.video.short_side, data.video.crop, data.inference_window, data.inference_overlap) == (24, 24, 32, 0.5)
    assert data.labels == FIXTURE_CLASSES and (data.train_subset, data.test_subset) == ("training", "validation")
    notes = json.loads((directory / "import_report.json").read_text())["notes"]
    assert not any("then runs NMS" in note for note in notes) and any("frame i x 4" in note for note in notes)
    result = CliRunner().invoke(app, ["predict", "--model", str(directory), "--data", str(demo_videos), "--subset", "test",
                                      "--out", str(tmp_path / "pred.json"), "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "pred.json").read_text())["results"]
    videos = load_annotations(demo_videos / "annotations.json").subset("test")
    assert sorted(results) == sorted(v.video_id for v in videos) and all(results.values())
    # The longer video (22.25 s: 45 positions) runs in two windows; detections lie inside their video.
    assert all(0 <= d["segment"][0] <= d["segment"][1] <= v.duration for v in videos for d in results[v.video_id])


def test_opentad_end_to_end_import_reads_frames_where_the_root_has_no_videos(tmp_path, demo_videos):
    weights, _, _ = opentad_case("student_e2e")
    videos = list(load_annotations(demo_videos / "annotations.json").videos.values())
    root = write_fixture_annotations(tmp_path / "data", videos, "frames")
    _, spec = load_model(import_opentad(tmp_path, "student_e2e", weights, data_root=root))
    assert (spec.data.kind, spec.data.fps, spec.data.video, spec.data.inference_window) == ("frames", 2.0, None, 32)
    # Without a dataset the config's paths are not there: frames, and no frame rate to read.
    (tmp_path / "bare").mkdir()
    _, spec = load_model(import_opentad(tmp_path / "bare", "student_e2e", weights))
    assert (spec.data.kind, spec.data.fps, spec.data.inputs_dir) == ("frames", None, "data/thumos-14/raw_data/video")


def test_opentad_import_refuses_videos_of_several_frame_rates_unless_given_one(tmp_path, demo_videos):
    weights, _, _ = opentad_case("student_e2e")
    videos = list(load_annotations(demo_videos / "annotations.json").videos.values())
    root = write_fixture_annotations(tmp_path / "data", videos, "videos", fps={videos[0].video_id: 16.0})
    source = write_opentad_checkpoint(tmp_path / "e2e.pth", weights, ema=True)
    command = ["import", "opentad", str(source), "--config", str(OPENTAD / "student_e2e.py"), "--class-map",
               str(OPENTAD / "category_idx.txt"), "--data-root", str(root), "--out", str(tmp_path / "model")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "fps are 8, 16" in result.output and "give --fps" in result.output, result.output
    assert not (tmp_path / "model").exists()
    result = CliRunner().invoke(app, [*command, "--fps", "30"])
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "model")[1].data.fps == 7.5


@pytest.mark.parametrize("old, new, message", [
    ('dict(type="mmaction.CenterCrop", crop_size=24),',
     'dict(type="mmaction.CenterCrop", crop_size=24), dict(type="mmaction.Flip", flip_ratio=0.5),',
     r"pipeline\[2\] .*mmaction.Flip.*: a step tadprune's video decoding does not have"),
    ('dict(type="mmaction.Resize", scale=(-1, 24)),', 'dict(type="mmaction.Resize", scale=(24, 24), keep_ratio=False),',
     r"pipeline\[0\] .*keep_ratio.*: tadprune resizes once, bilinearly, the short side"),
    ('dict(type="mmaction.Resize", scale=(-1, 24)),',
     'dict(type="LoadFrames", method="resize"), dict(type="mmaction.Resize", scale=(-1, 24)),',
     r"pipeline\[0\] .*LoadFrames.*every snippet_stride-th frame"),
    ('dict(type="mmaction.CenterCrop", crop_size=24),', "", "no mmaction.Resize of the short side followed by mmaction.CenterCrop"),
    ("window_size=window_size, ", "", r"window_size -1: ThumosSlidingDataset needs a positive number of snippets"),
])
def test_opentad_import_refuses_test_settings_it_cannot_express(tmp_path, demo_videos, old, new, message):
    weights, _, _ = opentad_case("student_e2e")
    config = opentad_config_variant(tmp_path, "student_e2e", old, new)
    with pytest.raises(CheckpointError, match=message):
        import_opentad(tmp_path, "student_e2e", weights, config=config, data_root=demo_videos, img_size=24)
    assert not (tmp_path / "student_e2e").exists()
