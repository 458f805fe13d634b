"""TAD models: video backbones, the ActionFormer detector, and the model that joins them."""
from .actionformer import ActionFormer, DetectorConfig, DetectorOutput, Detections, InferenceConfig
from .blvnet import BLVNET_PRESETS, BLVNetConfig, BLVNetTAM
from .tad_model import ModelConfig, TADModel
from .videomae import VIDEOMAE_PRESETS, VideoMAEBackbone, VideoMAEConfig

__all__ = [
    "ActionFormer", "BLVNET_PRESETS", "BLVNetConfig", "BLVNetTAM", "DetectorConfig", "DetectorOutput", "Detections", "InferenceConfig",
    "ModelConfig", "TADModel", "VIDEOMAE_PRESETS", "VideoMAEBackbone", "VideoMAEConfig",
]
