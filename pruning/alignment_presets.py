"""Named alignment settings: `cheap`, the default (a few epochs of LoRA, norms and input embedding,
the detector frozen, fp32, no warm-up, no EMA), and `pbd`, the recipe of PBD's release.

`pbd`: what nanxiaolu/Progressive_Block_Drop-TAD runs for VideoMAE-S on THUMOS14
(`tools/train_distillation_auto.py` with
`configs/adatad/videomae/e2e_thumos_videomae_s_768x1_160_LongLoRA_distillation_auto.py`, whose
`_base_` are `configs/_base_/models/actionformer_{student,teacher}.py`), fact by fact:

- What trains. Backbone: `VisionTransformerLongLoRAStudent._freeze_layers`
  (`opentad/models/backbones/vit_longlora_student.py`) sets requires_grad False on every block
  parameter whose name holds neither `lora` nor `norm` (so qkv/proj/MLP weights and q/v biases are
  frozen, norm1/norm2 train); `get_backbone_optim_groups` (`opentad/cores/optimizer.py`, config
  `optimizer.backbone`: `exclude=["backbone"]`, `custom` groups `lora`, `norm`, `patch_embed`)
  puts only LoRA, norm and patch-embedding parameters in the optimiser. Detector:
  `ActionFormerStudent.get_optim_groups` (`opentad/models/detectors/actionformer_student.py`) puts
  every non-backbone parameter in the optimiser: the detector's projection (embedding convs and its
  own transformer), neck and heads all train -> `train_detector=True`.
- LoRA (`LoRALayer`, `vit_longlora_student.py`, their own module, not peft): on `attn.qkv` and
  `attn.proj` of every remaining block; rank `lora_rank=384 // 4` = 96 (the config) -> rank None
  (a quarter of the width); output `alpha * x @ A @ B` with alpha 1, i.e. peft's scaling
  lora_alpha / r = 1 -> `lora_alpha` None (= rank); no dropout; A is `randn(in, rank) /
  sqrt(rank)`: normal with std 1/sqrt(rank) = 0.102 at rank 96 (the rank, not a fan-in; peft's
  default is kaiming-uniform with std 1/sqrt(3 * in_features) = 0.029 at 384 inputs, peft's
  "gaussian" std 1/r = 0.010) -> `lora_init="normal"`; B zeros. Merged into the weights after every
  drop (`tools/model_converters/merge_model.py`, W += (A @ B)^T, for the raw and the EMA weights).
- Optimiser: AdamW, lr 1e-4 for every group (`custom_lr = 1e-4`, `optimizer.lr`), weight decay
  0.05 (the config). Exempt from decay: in the detector, biases, LayerNorm weights and the
  `Scale` / `AffineDropPath` scales (`get_optim_groups`); in the backbone nothing is exempt (LoRA,
  norms and the patch embedding's weight and bias all decay at 0.05).
- Schedule: `LinearWarmupCosineAnnealingLR` (`opentad/cores/scheduler.py`), stepped per iteration
  (`opentad/cores/train_engine_dist.py`), warm-up 5 epochs linear from 0 (lr 0 at the first
  iteration, the base rate at iteration 5 * iters - 1), cosine to eta_min 1e-8 over max_epoch 65
  (`sub_scheduler` / `scheduler`), while each drop runs 60 epochs (`workflow.sub_end_epoch`,
  `full_end_epoch`): the last iteration is at 1.7% of the base rate. (The non-auto config
  `..._distillation.py` uses max_epoch 60.)
- Gradient clipping: L2 norm 1 over all parameters with gradients, after unscaling under AMP
  (`solver.clip_grad_norm=1`, `train_engine_dist.py`).
- EMA: `ModelEma` (`opentad/utils/ema.py`), decay 0.999, over the whole state dict, updated after
  every optimiser step from a copy of the student taken before training (`solver.ema=True`). The
  EMA is what is evaluated (`eval_one_epoch`, `opentad/cores/test_engine.py`), what picks the kept
  checkpoint, and what the next block selection and the next teacher (ActivityNet) load.
- Mixed precision: `solver.amp=True`: fp16 autocast around the teacher's and the student's
  forward and the loss, `torch.cuda.amp.GradScaler()` with its defaults (`train_engine_dist.py`).
- Epochs per drop: 60 (above). Batch size 2 per GPU (`solver.train`; ours is `train.batch_size`).
- Teacher: `solver.dynamic_teacher=False` on THUMOS14: the uncompressed model (its EMA weights)
  throughout -> `teacher="original"`; the ActivityNet config sets `dynamic_teacher=True` (the
  previous drop's model).
- Losses (`solver.weight`, `cal_loss`): task focal + DIoU (weights 1), MSE between each remaining
  block's output and the teacher's block of the same original index averaged over the remaining
  blocks (`loss_out`, 1; the attention-output and relation losses are off), KL on class logits at
  temperature 3.5 times T^2 (`loss_cls_kd`, 1; `temperature=3.5`), DIoU between the student's and
  the teacher's decoded segments at positive points (`loss_reg_kd`, 1) -> the defaults.

Where `pbd` differs from the release (kept to the project's one loop, recorded in
`benchmarks/RESULTS.md`): backbone norms and the patch embedding's bias do not decay here (1-D
parameters never do); the first step runs at 1/warm-up-steps of the rate, not 0, and the cosine
reaches zero at the 60th epoch instead of 1.7% (horizon 65); the EMA starts at the weights after
the first step (torch's `AveragedModel`) rather than before it; the last EMA is kept, where the
release keeps the EMA checkpoint with the best test-set mAP@0.5 among epochs 10, 15, ..., 60; the
next drop starts from the kept (EMA) model, where the release carries the raw and the EMA weights
on separately. fp16 applies on CUDA only; elsewhere the preset runs in fp32.
"""
from __future__ import annotations

ALIGNMENT_PRESETS: dict[str, dict] = {
    "cheap": {},
    "pbd": {
        "epochs": 60, "lr": 1e-4, "weight_decay": 0.05, "warmup_epochs": 5, "ema_decay": 0.999,
        "precision": "fp16", "train_detector": True, "rank": None, "lora_alpha": None, "lora_init": "normal",
        "teacher": "original", "grad_clip": 1.0, "task_weight": 1.0, "feature_weight": 1.0, "kl_weight": 1.0,
        "diou_weight": 1.0, "temperature": 3.5,
    },
}
