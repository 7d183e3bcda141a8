"""megatron_redi: Megatron-style training for Reinforcement Distillation (REDI) of reasoning models."""

__version__ = "0.1.0"
