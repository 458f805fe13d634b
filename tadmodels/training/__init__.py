"""Training a base TAD model and reading/writing model directories."""
from ..spec import TrainConfig
from .trainer import Experiment, load_model, save_model, train, train_and_save

__all__ = ["Experiment", "TrainConfig", "load_model", "save_model", "train", "train_and_save"]
