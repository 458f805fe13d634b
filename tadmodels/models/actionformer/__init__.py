"""ActionFormer's detector, split as the release is: blocks / backbone / necks / heads / losses /
targets / post-processing / detector."""
from .detector import ActionFormer, DetectorConfig, DetectorOutput, DetectorTrainConfig
from .postprocess import Detections, InferenceConfig

__all__ = ["ActionFormer", "DetectorConfig", "DetectorOutput", "DetectorTrainConfig", "Detections", "InferenceConfig"]
