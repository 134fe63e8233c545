"""Training: configs, schedule, losses, the Trainer, checkpoints, logging, evaluation."""

from alae_fast.train.config import RunConfig, TrainConfig, available_configs, load_config
from alae_fast.train.loop import format_summary, save_grids, train
from alae_fast.train.schedule import Schedule
from alae_fast.train.step import ALAEStep, StepOptions
from alae_fast.train.trainer import NonFiniteTraining, Trainer

__all__ = ["ALAEStep", "NonFiniteTraining", "RunConfig", "Schedule", "StepOptions", "TrainConfig", "Trainer",
           "available_configs", "format_summary", "load_config", "save_grids", "train"]
