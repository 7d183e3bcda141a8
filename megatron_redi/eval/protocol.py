"""How a benchmark is evaluated: one dataclass, read by tools/evaluate.py and by the trainer's
in-training evaluation alike. Its defaults decode as the paper did (Appendix C.5); the paper's two
protocols, ``intermediate`` and ``final``, are named below with what they score."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings import ConfigError, check_settings, choice, setting
from .answers import CHECKERS, checker_in_use

PROMPT_STYLES = ("lighteval", "chat", "raw")
GOLD_FIELDS = ("answer", "solution")  # the benchmark row's field the checker compares with


@dataclass
class Protocol:
    samples: int = setting(16, "generations per problem (k): pass@1 is their mean, the SEM their spread")
    temperature: float = setting(0.6, "0: greedy")
    top_p: float = setting(0.95, "nucleus sampling")
    max_new_tokens: int = setting(32768, "per generation")
    prompt: str = choice("lighteval", PROMPT_STYLES, "lighteval: the paper's math template in the chat turn")
    force_think: bool = setting(True, "\"<think>\" as the start of the answer, as the paper's models were prompted")
    sem_ddof: int = setting(0, "the SEM's standard deviation: 0 population (the reference's numpy default), 1 sample")
    checker: str = choice("math-verify", CHECKERS, "how a boxed answer is compared with the reference")
    gold: str = choice("answer", GOLD_FIELDS, "what it is compared with: the benchmark's answer, or its reference "
                                              "solution (LightEval's MATH-500 gold)")

    def __post_init__(self):
        check_settings(self)
        if self.samples < 1 or self.max_new_tokens < 1 or self.sem_ddof not in (0, 1):
            raise ConfigError(f"samples and max_new_tokens must be positive and sem_ddof 0 or 1: {self}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0 and 0 < self.top_p <= 1):
            raise ConfigError(f"temperature must be a finite number >= 0 (0: greedy) and top_p in (0, 1]; got "
                              f"temperature {self.temperature}, top_p {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def record(self) -> dict:
        """What a summary states about how it was obtained: the protocol's name and every setting."""
        return {"name": name_of(self), "samples": self.samples, "temperature": self.temperature,
                "top_p": 1.0 if self.greedy else self.top_p, "max_new_tokens": self.max_new_tokens, "prompt": self.prompt, "force_think": self.force_think,
                "sem_std": "population (ddof 0)" if self.sem_ddof == 0 else "sample (ddof 1)",
                "checker": checker_in_use(self.checker), "gold": self.gold}


# The paper's two protocols by name (Appendix C.5). Both sample alike (the defaults above); they
# differ in how many samples they score and how, and in their benchmarks.
NAMED = {
    # LightEval on MATH-500 as the reference ran it to tune and to pick a run's best checkpoint: the
    # model's own template (no forced "<think>"), expressions and LaTeX read from the whole output,
    # the gold read from MATH-500's solution
    "intermediate": {"samples": 4, "checker": "lighteval", "force_think": False, "gold": "solution"},
    # the same scoring on the boxed answer against the benchmark's answer, "<think>" forced (this
    # library's intermediate protocol until December 2026; benchmarks without a solution column)
    "intermediate_boxed": {"samples": 4, "checker": "math-verify"},
    # DeepScaleR / rllm on the five benchmarks: the tables (pass@1 over 16 samples, and pass@16)
    "final": {"samples": 16, "checker": "rllm"},
}
BENCHMARKS = {"intermediate": ("math500",), "final": ("math500", "aime24", "amc23", "minerva", "olympiadbench")}


def named(name: str, **changes) -> Protocol:
    if name not in NAMED:
        raise ConfigError(f"protocol {name!r} is not one of {', '.join(NAMED)}")
    return Protocol(**{**NAMED[name], **changes})


def name_of(protocol: Protocol) -> str:
    """The named protocol whose every setting ``protocol`` has, or "custom"."""
    return next((name for name in NAMED if named(name) == protocol), "custom")


def add_protocol_arguments(parser, scoring: bool = True) -> None:
    """The protocol's command-line options: ``--protocol NAME`` (with ``scoring``) and each setting,
    which, when given, changes the named protocol's (tools/evaluate.py, tools/analyze.py)."""
    if scoring:
        parser.add_argument("--protocol", choices=sorted(NAMED),
                            help="the paper's protocol: intermediate (MATH-500, 4 samples, scored as LightEval did), "
                                 "intermediate_boxed (the same on the boxed answer, <think> forced) or final (the "
                                 "tables: 16 samples, the rllm grader); each option below changes one of its settings")
        parser.add_argument("--samples", type=int, help="k generations per problem")
        parser.add_argument("--sem-ddof", type=int, choices=(0, 1),
                            help="the SEM's standard deviation: 0 population (the reference's), 1 sample")
        parser.add_argument("--checker", choices=CHECKERS, help="how answers are compared")
        parser.add_argument("--gold", choices=GOLD_FIELDS,
                            help="compare with each problem's answer, or its solution (LightEval's MATH-500 gold)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--greedy", action="store_true", help="temperature 0")
    parser.add_argument("--prompt", choices=PROMPT_STYLES)
    parser.add_argument("--force-think", dest="force_think", action="store_true", default=None,
                        help='start the answer with "<think>"')
    parser.add_argument("--no-force-think", dest="force_think", action="store_false", default=None,
                        help='do not start the answer with "<think>"')


def protocol_from_arguments(args, default: str = "final") -> Protocol:
    """The protocol named by ``--protocol`` (else ``default``), with the settings given changed."""
    changes = {key: value for key in ("samples", "sem_ddof", "checker", "gold", "max_new_tokens", "temperature",
                                      "top_p", "prompt", "force_think") if (value := getattr(args, key, None)) is not None}
    if args.greedy:
        changes["temperature"] = 0.0
    return named(getattr(args, "protocol", None) or default, **changes)
