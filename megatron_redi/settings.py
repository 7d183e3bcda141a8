"""What every configuration of the package shares: the error of a bad setting (named), settings
declared with their help and limits (``setting``, ``check_settings``), the dtype names, and readers
of the files a configuration comes from (JSON, YAML refusing duplicate keys, local directories)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import field

import torch
import yaml

from .cli import UserError


class ConfigError(UserError):
    """A config that names an unsupported model or contradicts itself."""


# dtype names, as every config file and command line spells them
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# what training and generation compute in (fp16 would need loss scaling, which the trainer lacks)
COMPUTE_DTYPES = ("bf16", "fp32")


def setting(default, help: str, *, choices=None, at_least=None, positive: bool = False):
    """A dataclass field with its meaning (what ``--help`` shows) and its limits, declared once:
    ``choices`` (the one constant naming them), ``at_least`` (an integer floor), ``positive`` (a
    number above 0); ``check_settings`` enforces them. A limit applies to a value that is set (an
    optional field's None passes)."""
    meta = {"help": help, "choices": None if choices is None else tuple(choices), "at_least": at_least,
            "positive": positive}
    return field(default=default, metadata=meta)


def choice(default: str, options, help: str = "") -> str:
    """A field that must hold one of ``options``."""
    return setting(default, help, choices=options)


def check_settings(obj, prefix: str = "") -> None:
    """Every declared limit of a dataclass's fields; the error names the field (``prefix``: its
    section, as in "optim.lr"; by default the class's ``SETTINGS_PREFIX``, if it has one)."""
    prefix = prefix or getattr(obj, "SETTINGS_PREFIX", "")
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), prefix + f.name
        options, low = f.metadata.get("choices"), f.metadata.get("at_least")
        if options is not None and value not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        if value is None or isinstance(value, str):
            continue
        if low is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
        if f.metadata.get("positive") and not value > 0:
            raise ConfigError(f"{name} must be a positive number, got {value}")


def local_directory(path: str, what: str) -> str:
    """``path`` when it is a local directory; else an error at once. A Hub name would cost minutes of
    retries on a machine without network before failing."""
    if not os.path.isdir(path):
        raise ConfigError(f"{path}: no such directory ({what} must be a local directory; download it first, "
                          "e.g. huggingface-cli download NAME --local-dir DIR)")
    return path


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def tokenizer_directory(path: str) -> str:
    """``path`` when it is a local directory holding a tokenizer's files; else an error at once,
    before a model is loaded for nothing."""
    local_directory(path, "the tokenizer")
    if not any(os.path.exists(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise ConfigError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); give the tokenizer's "
                          "directory (--tokenizer)")
    return path


def load_json(file: str, error: type[Exception], missing: str = "no such file"):
    """A JSON file's content; a missing or malformed file raises ``error`` naming it."""
    try:
        with open(file) as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{file}: {missing}") from None
    except json.JSONDecodeError as e:
        raise error(f"{file}: not valid JSON ({e})") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader (no code runs), refusing a key given twice in one mapping: plain YAML
    keeps the last and silently drops the first, which is how a setting goes missing."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:  # "? [a, b]": no setting's name
                raise yaml.constructor.ConstructorError(None, None, f"a key that is a {type(key).__name__} "
                                                        f"({key!r}), not a name", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(file: str, error: type[Exception]):
    """A YAML file's content; a missing or malformed file, or a key given twice, raises ``error``
    naming the file (and the line)."""
    try:
        with open(file) as f:
            return yaml.load(f, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise error(f"{file}: no such file") from None
    except yaml.YAMLError as e:
        raise error(f"{file}: not valid YAML ({' '.join(str(e).split())})") from None
