"""Teacher traces (OpenR1-Math-Raw schema) -> tokenised D_SFT and D_Pref for training.

    python tools/preprocess_data.py --input raw/*.parquet --tokenizer Qwen2.5-Math-1.5B --output-dir data/redi

Reads local .jsonl, .parquet, .arrow files or a directory saved by datasets (globs allowed), or a
Hub dataset as hub:OWNER/NAME[/CONFIG][:SPLIT] where a network exists.
Writes sft/, pairs/, meta.json and report.json (rows read, SFT rows, pairs, dropped rows by
reason, length percentiles). Malformed rows are counted per reason, or with --strict stop the run
with the file and row named. Exit code 2 on bad input; the output appears only when complete.
"""

import argparse
import json
import sys

from megatron_redi.data.preprocess import Options, preprocess
from megatron_redi.cli import HelpFormatter, command, positive_int


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--input", nargs="+", required=True,
                   help="files, globs, saved datasets directories, or hub:OWNER/NAME[/CONFIG][:SPLIT]")
    p.add_argument("--tokenizer", required=True, help="an HF tokenizer directory (with a chat template)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-prompt-tokens", type=positive_int, default=800, help="pairs: longest prompt")
    p.add_argument("--max-response-tokens", type=positive_int, default=19000,
                   help="pairs: longest chosen or rejected response")
    p.add_argument("--max-sft-tokens", type=positive_int, default=32768,
                   help="SFT: longer sequences are truncated to it")
    p.add_argument("--drop-long-sft", action="store_true", help="drop SFT sequences over the limit instead")
    p.add_argument("--exclude-sources", nargs="*", default=["cn_k12"],)
    p.add_argument("--correctness", choices=["both", "either"], default="both",
                   help="a trace is correct when both verifiers (default) or either says so")
    p.add_argument("--shuffle-generations", action="store_true",
                   help="visit each row's generations in a seeded random order before choosing (a departure "
                        "from the paper, which takes the first correct and first incorrect in the row's order)")
    p.add_argument("--seed", type=int, default=0, help="for --shuffle-generations")
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--strict", action="store_true", help="stop at the first malformed row")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    opts = Options(tokenizer=args.tokenizer, max_prompt_tokens=args.max_prompt_tokens,
                   max_response_tokens=args.max_response_tokens, max_sft_tokens=args.max_sft_tokens,
                   exclude_sources=tuple(args.exclude_sources), seed=args.seed, correctness=args.correctness,
                   shuffle_generations=args.shuffle_generations, drop_long_sft=args.drop_long_sft,
                   strict=args.strict)
    report = preprocess(args.input, args.output_dir, opts, workers=args.workers, overwrite=args.overwrite,
                        progress=not args.no_progress)
    print(json.dumps({k: v for k, v in report.items() if k != "lengths"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
