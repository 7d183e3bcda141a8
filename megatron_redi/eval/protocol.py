"""How a benchmark is evaluated: one dataclass, whose defaults are the paper's protocol (Appendix C.5),
read by tools/evaluate.py and by the trainer's in-training evaluation alike."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ConfigError, check_choices, choice
from .answers import CHECKERS, checker_in_use

PROMPT_STYLES = ("lighteval", "chat", "raw")


@dataclass
class Protocol:
    samples: int = 16  # generations per problem (k): pass@1 is their mean, the SEM their spread
    temperature: float = 0.6  # 0: greedy
    top_p: float = 0.95  # nucleus sampling
    max_new_tokens: int = 32768  # per generation
    prompt: str = choice("lighteval", PROMPT_STYLES)  # lighteval: the paper's math template in the chat turn
    force_think: bool = True  # "<think>" as the start of the answer, as the paper's models were prompted
    sem_ddof: int = 0  # the SEM's standard deviation: 0 population (the reference's numpy default), 1 sample
    checker: str = choice("math-verify", CHECKERS)  # how a boxed answer is compared with the reference

    def __post_init__(self):
        check_choices(self)
        if self.samples < 1 or self.max_new_tokens < 1 or self.sem_ddof not in (0, 1):
            raise ConfigError(f"samples and max_new_tokens must be positive and sem_ddof 0 or 1: {self}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0 and 0 < self.top_p <= 1):
            raise ConfigError(f"temperature must be a finite number >= 0 (0: greedy) and top_p in (0, 1]; got "
                              f"temperature {self.temperature}, top_p {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def record(self) -> dict:
        """What a summary states about how it was obtained."""
        return {"samples": self.samples, "temperature": self.temperature, "top_p": 1.0 if self.greedy else self.top_p,
                "max_new_tokens": self.max_new_tokens, "prompt": self.prompt, "force_think": self.force_think,
                "sem_std": "population (ddof 0)" if self.sem_ddof == 0 else "sample (ddof 1)",
                "checker": checker_in_use(self.checker)}


def add_protocol_arguments(parser, scoring: bool = True) -> None:
    """The protocol's command-line options, defaulting to the paper's: how to generate, and with
    ``scoring`` how many samples and how to score them (tools/evaluate.py, tools/analyze.py)."""
    paper = Protocol()
    if scoring:
        parser.add_argument("--samples", type=int, default=paper.samples, help="k generations per problem")
        parser.add_argument("--sem-ddof", type=int, choices=(0, 1), default=paper.sem_ddof,
                            help="the SEM's standard deviation: 0 population (the reference's), 1 sample")
        parser.add_argument("--checker", choices=CHECKERS, default=paper.checker, help="how answers are compared")
    parser.add_argument("--max-new-tokens", type=int, default=paper.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=paper.temperature)
    parser.add_argument("--top-p", type=float, default=paper.top_p)
    parser.add_argument("--greedy", action="store_true", help="temperature 0")
    parser.add_argument("--prompt", choices=PROMPT_STYLES, default=paper.prompt)
    parser.add_argument("--no-force-think", dest="force_think", action="store_false",
                        help='do not start the answer with "<think>"')


def protocol_from_arguments(args) -> Protocol:
    scoring = {k: getattr(args, k) for k in ("samples", "sem_ddof", "checker") if hasattr(args, k)}
    return Protocol(temperature=0.0 if args.greedy else args.temperature, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens, prompt=args.prompt, force_think=args.force_think, **scoring)
