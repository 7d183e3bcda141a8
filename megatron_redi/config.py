"""The former home of the model's configuration and the shared settings, kept so that
``from megatron_redi.config import ...`` still works: the model's configuration and its presets
are megatron_redi/model_config.py, what every configuration shares (ConfigError, ``setting``, the
dtype names, the file readers) is megatron_redi/settings.py."""

from .model_config import PRESETS, SUPPORTED_ARCHITECTURES, ModelConfig, RopeScaling, preset
from .settings import (COMPUTE_DTYPES, DTYPES, TOKENIZER_FILES, ConfigError, check_settings, choice, load_json,
                       load_yaml, local_directory, setting, tokenizer_directory)

__all__ = ["COMPUTE_DTYPES", "DTYPES", "PRESETS", "SUPPORTED_ARCHITECTURES", "TOKENIZER_FILES", "ConfigError",
           "ModelConfig", "RopeScaling", "check_settings", "choice", "load_json", "load_yaml", "local_directory",
           "preset", "setting", "tokenizer_directory"]
