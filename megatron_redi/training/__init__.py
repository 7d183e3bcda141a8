"""The trainer: config, fp32 master weights and AdamW, checkpoints, metrics, the loop."""

from .config import TrainConfig, TrainConfigError, load_config
from .trainer import Trainer, TrainingStopped, train

__all__ = ["TrainConfig", "TrainConfigError", "Trainer", "TrainingStopped", "load_config", "train"]
