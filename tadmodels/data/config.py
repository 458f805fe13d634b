"""Validated description of a TAD dataset on disk (DESIGN.md "Data formats")."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..fields import added_field


class SyntheticSource(BaseModel):
    """Generate the dataset with `tadprune data synth` when `root` does not exist yet."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    seed: int = 0


class VideoDecoding(BaseModel):
    """How `kind: videos` turns a video file into uint8 RGB frames `[T, crop, crop, 3]`: OpenTAD's
    end-to-end test pipeline (PBD's `e2e_thumos_videomae_s_768x1_160` and ActivityNet configs:
    `Resize(scale=(-1, 160))` then `CenterCrop(160)`), applied to training videos as well.

    The shorter side is resized to `short_side` (aspect kept, sizes rounded half up, bilinear as
    cv2's INTER_LINEAR), then the centred `crop` x `crop` square is cut (offset `(size - crop) // 2`).
    OpenTAD's training augmentation (short side 182, RandomResizedCrop, resize to 160, flip, ImgAug,
    ColorJitter) is not applied: training reads the same frames as testing, as for `kind: frames`.
    """

    model_config = ConfigDict(extra="forbid")

    short_side: int = Field(default=160, ge=1, description="pixels of the shorter side after resizing")
    crop: int = Field(default=160, ge=1, description="side of the centre crop: the backbone's input size")
    cache_dir: Path | None = Field(
        default=None, description="decoded frames per video (uint8 .npy), reused by later epochs and runs; "
                                  "None: decode every time")

    @model_validator(mode="after")
    def _crop_fits(self) -> "VideoDecoding":
        if self.crop > self.short_side:
            raise ValueError(f"crop {self.crop} is larger than short_side {self.short_side}: the crop must fit the resized frame")
        return self


class DataConfig(BaseModel):
    """Where a dataset lives and how its time axis maps onto the feature grid.

    `feature_stride` and `clip_length` are in frames: feature i covers frames
    [i * stride, i * stride + clip). For `kind: frames` and `videos` they describe the grid the
    backbone produces (its temporal stride), and the model spec checks they agree.
    `fps` is the rate frames are taken at: `videos` are decoded at it (the frame nearest each
    k / fps), `frames` arrays must hold it.
    """

    model_config = ConfigDict(extra="forbid")

    root: Path
    kind: Literal["features", "frames", "videos"]
    annotations: str = "annotations.json"
    inputs_dir: str | None = Field(default=None, description="defaults to `features`, `frames` or `videos`")
    fps: float | None = Field(default=None, gt=0, description="None: each video's fps from the annotations")
    feature_stride: int = Field(default=4, ge=1)
    clip_length: int = Field(default=16, ge=1)
    train_subset: str = "validation"
    test_subset: str = "test"
    # THUMOS14 trains on its "validation" videos, so a third subset is named for what it is for.
    heldout_subset: str | None = added_field(
        None, description="videos neither trained nor tested on, for decisions taken on data (a search's "
                          "rungs) that the test figures must not see; None: the dataset has none")
    labels: list[str] | None = Field(default=None, description="label names in id order; None: from the annotations")
    max_seq_len: int = Field(default=2304, ge=1, description="training window, in feature-grid positions")
    video: VideoDecoding | None = added_field(None, description="kind videos only; None there: the defaults")
    num_workers: int = added_field(0, ge=0, description="DataLoader worker processes that read (and decode) "
                                                        "videos; 0: the main process")
    # OpenTAD's THUMOS14 test set-up: windows of the training length, overlapping by half, whose
    # detections are merged by NMS over the whole video (see tadmodels.inference).
    inference_window: int | None = added_field(None, ge=1, description="grid positions per inference window; "
                                                                       "None: whole videos in one pass")
    inference_overlap: float = added_field(0.5, ge=0, lt=1, description="fraction shared by neighbouring windows")
    synthetic: SyntheticSource | None = None

    @model_validator(mode="after")
    def _unique_labels(self) -> "DataConfig":
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: names must be unique")
        return self

    @model_validator(mode="after")
    def _heldout_is_its_own(self) -> "DataConfig":
        # Subset names are compared case-insensitively (`Annotations.subset`, as ActionFormer does).
        others = {self.train_subset.lower(): "train_subset", self.test_subset.lower(): "test_subset"}
        if self.heldout_subset is not None and self.heldout_subset.lower() in others:
            raise ValueError(f"heldout_subset: {self.heldout_subset!r} is also data.{others[self.heldout_subset.lower()]}; "
                             "held-out videos must be neither trained nor tested on")
        return self

    @model_validator(mode="after")
    def _decoding_for_videos(self) -> "DataConfig":
        if self.kind == "videos" and self.video is None:
            self.video = VideoDecoding()
        elif self.kind != "videos" and self.video is not None:
            raise ValueError(f"video: decoding settings apply to kind videos, not {self.kind}")
        return self

    @property
    def end_to_end(self) -> bool:
        """Frames (stored or decoded) that a backbone reads, rather than precomputed features."""
        return self.kind != "features"

    @property
    def annotations_path(self) -> Path:
        return self.root / self.annotations

    @property
    def inputs_path(self) -> Path:
        return self.root / (self.inputs_dir or self.kind)
