"""ActionFormer-style detector, split as blocks / backbone / heads / losses / targets / post-processing."""
from .detector import ActionFormer, DetectorConfig, DetectorOutput
from .postprocess import Detections, InferenceConfig

__all__ = ["ActionFormer", "DetectorConfig", "DetectorOutput", "Detections", "InferenceConfig"]
