"""Training: configs, schedule, losses, the Trainer, checkpoints, logging, evaluation."""

from alae_fast.train.config import RunConfig, TrainConfig, available_configs, load_config
from alae_fast.train.loop import format_summary, save_grids, train
from alae_fast.train.schedule import Schedule
from alae_fast.train.trainer import Trainer

__all__ = ["RunConfig", "Schedule", "TrainConfig", "Trainer", "available_configs", "format_summary",
           "load_config", "save_grids", "train"]
