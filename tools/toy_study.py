#!/usr/bin/env python
"""The toy study of docs/toy_study.md: when do negative traces help a small student?

    python tools/toy_study.py --task addition --output runs/toy_study/addition
    python tools/toy_study.py --task decoy --output runs/toy_study/decoy
    python tools/toy_study.py --mechanism runs/toy_study/addition/results.json runs/toy_study/decoy/results.json

One task per call, on CPU, two one-process runs at a time (--workers). In order: the data (train,
validation and test problems drawn apart; the teacher's four generations per problem, exact
labels, in the OpenR1-Math-Raw schema); stage 1 (SFT, evaluated on the validation problems after
every epoch; the plateau epoch's checkpoint is the start of stage 2, the first at 30 % the weaker
sibling); the four
kinds of negatives with their diagnostics (the start's LogPS of chosen and rejected, where the
rejected trace first differs); the stage-2 grid (alpha 0, 0.8, 1.0 per kind, more SFT; three
learning rates, three seeds), each run evaluated once on the test problems; then OUTPUT/results.md
and results.json with every cell and the pre-registered verdict. Every step that finished is kept:
the same command resumes an interrupted study.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from megatron_redi.atomic import atomic_file  # noqa: E402
from megatron_redi.cli import HelpFormatter, command  # noqa: E402
from megatron_redi.data import synthetic  # noqa: E402
from megatron_redi.eval.toy_study import (ALPHAS, KINDS, mechanism, mechanism_table, plateau_epoch,  # noqa: E402
                                          table, verdict)
from megatron_redi.training.metrics import read_metrics  # noqa: E402

# the toy's evaluation: the paper's sampling, the toy's chat prompt (its student never saw LightEval's)
SAMPLING = dict(temperature=0.6, top_p=0.95, prompt="chat", force_think=False, max_new_tokens=128)


class Study:
    def __init__(self, args):
        self.args, self.out = args, os.path.abspath(args.output)
        self.env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=ROOT,
                        PYTHONWARNINGS="ignore")
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)

    def path(self, *parts) -> str:
        return os.path.join(self.out, *parts)

    def sh(self, log: str, *cmd) -> None:
        with open(self.path("logs", log + ".log"), "w") as f:
            done = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode:
            sys.exit(f"failed: {' '.join(map(str, cmd))} (log: {self.path('logs', log + '.log')})")

    def train(self, name: str, data: str, model: str, *overrides) -> str:
        """A one-process run of the tiny model; returns its newest checkpoint."""
        out = self.path("runs", name)
        if not os.path.exists(os.path.join(out, "done")):
            if name != "stage1":  # a short run cut off: started again whole (stage 1 resumes)
                shutil.rmtree(out, ignore_errors=True)
            self.sh(name, sys.executable, "-m", "megatron_redi.train", "--model.path", model, "--data.path", data,
                    "--train.output_dir", out, "--model.dtype", "fp32", "--model.recompute", "none",
                    "--parallel.tensor_parallel", "1", "--parallel.sequence_parallel", "false",
                    "--train.progress", "false", "--train.tensorboard", "false", "--data.global_batch", "32", *overrides)
            open(os.path.join(out, "done"), "w").close()
        return sorted(os.scandir(os.path.join(out, "checkpoints")), key=lambda e: e.name)[-1].path

    # -- data ------------------------------------------------------------------------------------

    def wrong_trace(self, rng, a, b) -> str:
        if self.args.task == "decoy":
            return synthetic.estimate(a, b)[0]
        while True:  # a slip that changes the answer (a dropped carry where there is none does not)
            text, answer = synthetic.solve(a, b, self.args.digits, (rng.choice(("sum", "carry")), rng.randrange(self.args.digits)))
            if answer != a + b:
                return text

    def data(self):
        a = self.args
        rng = random.Random(a.seed)
        decoy = a.task == "decoy"
        self.train_problems = synthetic.draw_problems(rng, a.train_problems, a.digits, decoy_safe=decoy)
        val = synthetic.draw_problems(rng, 200, a.digits, self.train_problems, decoy)
        test = synthetic.draw_problems(rng, 400, a.digits, self.train_problems + val, decoy)
        self.teacher = {}
        for x, y in self.train_problems:  # four generations, each correct with probability 0.6, one at least
            correct = [rng.random() < 0.6 for _ in range(4)]
            correct[rng.randrange(4)] |= not any(correct)
            self.teacher[(x, y)] = ([synthetic.solve(x, y, a.digits)[0] if c else self.wrong_trace(rng, x, y)
                                     for c in correct], correct)
        if os.path.exists(self.path("data", "teacher", "meta.json")):
            return
        os.makedirs(self.path("data"), exist_ok=True)
        for name, problems in (("validation", val), ("test", test)):
            with open(self.path("data", f"{name}.jsonl"), "w") as f:
                f.writelines(json.dumps({"problem": synthetic.problem_text(x, y), "answer": str(x + y)}) + "\n"
                             for x, y in problems)
        self.write_rows("teacher", [synthetic.schema_row(x, y, *self.teacher[(x, y)]) for x, y in self.train_problems])
        # the sibling learns from every teacher generation, right or wrong, as if all were right
        self.write_rows("unfiltered", [synthetic.schema_row(x, y, [g], [True]) for x, y in self.train_problems
                                       for g in self.teacher[(x, y)][0]])
        texts = [synthetic.problem_text(x, y) for x, y in self.train_problems[:300]]
        texts += [g for p in self.train_problems[:300] for g in self.teacher[p][0]]
        from megatron_redi.fixtures import DEFAULT_SYSTEM_PROMPT, make_tiny_tokenizer
        make_tiny_tokenizer(self.path("data", "tokenizer"), 512, texts=[f"system\n{DEFAULT_SYSTEM_PROMPT}\nuser\nassistant\n"] * 50 + texts)
        for name in ("teacher", "unfiltered"):
            self.preprocess(name)
        self.sh("student", sys.executable, "tools/make_synthetic_checkpoint.py", "--preset", "tiny", "--dtype", "fp32",
                "--output", self.path("student"))

    def write_rows(self, name, rows):
        with open(self.path("data", f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def preprocess(self, name):
        self.sh(f"preprocess_{name}", sys.executable, "tools/preprocess_data.py", "--input", self.path("data", f"{name}.jsonl"),
                "--tokenizer", self.path("data", "tokenizer"), "--output-dir", self.path("data", name), "--no-progress",
                "--overwrite")

    # -- stage 1 and the sibling -------------------------------------------------------------------

    def stage1(self):
        from megatron_redi.data.dataset import TokenizedData
        self.per_epoch = per_epoch = len(TokenizedData(self.path("data", "teacher")).sft) // 32
        eval_args = ["--eval.benchmark", self.path("data", "validation.jsonl"), "--eval.every", per_epoch,
                     "--eval.samples", 8]
        for key, value in SAMPLING.items():
            eval_args += [f"--eval.{key}", str(value).lower() if isinstance(value, bool) else value]
        self.train("stage1", self.path("data", "teacher"), self.path("student"), "--train.stage", "sft", "--loss.type",
                   "sft", "--optim.lr", self.args.stage1_lr, "--train.epochs", self.args.stage1_epochs,
                   "--checkpoint.every", per_epoch, "--checkpoint.keep", self.args.stage1_epochs + 1, *eval_args)
        evals = {m["step"]: 100 * m["eval/pass@1"] for m in read_metrics(self.path("runs", "stage1"))
                 if "eval/pass@1" in m}
        curve = [(step // per_epoch, acc) for step, acc in sorted(evals.items())]
        self.stage1_curve, self.plateau_epoch = curve, plateau_epoch(curve, self.args.plateau)
        self.start = self.path("runs", "stage1", "checkpoints", f"step_{self.plateau_epoch * per_epoch:08d}")

    def sibling(self) -> str:
        """The weaker sibling: the stage-1 student at the first epoch whose validation pass@1
        reached 30 % (same model and data, less trained)."""
        epoch = next(e for e, acc in self.stage1_curve if acc >= 30)
        self.sibling_epoch = epoch
        return self.path("runs", "stage1", "checkpoints", f"step_{epoch * self.per_epoch:08d}")

    # -- negatives -------------------------------------------------------------------------------

    def samples(self, checkpoint: str, samples: int, greedy: bool) -> dict:
        """Generations of the training problems by a checkpoint: {(a, b): [(text, correct), ...]}."""
        cache = self.path("data", f"samples_{os.path.basename(checkpoint)}_{'greedy' if greedy else samples}.json")
        if not os.path.exists(cache):
            from transformers import AutoTokenizer

            from megatron_redi.eval import Protocol, evaluate
            from megatron_redi.model import from_pretrained
            from megatron_redi.parallel import initialize
            model = from_pretrained(checkpoint, initialize(tensor_parallel_size=1)).eval()
            tokenizer = AutoTokenizer.from_pretrained(self.path("data", "tokenizer"))
            problems = [{"problem": synthetic.problem_text(x, y), "answer": str(x + y)} for x, y in self.train_problems]
            protocol = Protocol(samples=samples, **{**SAMPLING, "temperature": 0.0 if greedy else SAMPLING["temperature"]})
            results, _ = evaluate(model, tokenizer, problems, protocol, seed=self.args.seed, batch_size=500)
            with atomic_file(cache) as f:
                json.dump([list(zip(r["generations"], r["correct"])) for r in results], f)
        with open(cache) as f:
            return dict(zip(self.train_problems, json.load(f)))

    def negatives(self, sibling: str):
        pools = {"planted": {p: list(zip(*self.teacher[p])) for p in self.train_problems},
                 "sibling": self.samples(sibling, 4, greedy=False),
                 "own_t0.6": self.samples(self.start, 4, greedy=False),
                 "own_greedy": self.samples(self.start, 1, greedy=True)}
        rng = random.Random(self.args.seed)
        self.pair_counts = {}
        for kind, pool in pools.items():
            pairs = [(p, next(t for t, c in pool[p] if not c)) for p in self.train_problems if any(not c for _, c in pool[p])]
            available = len(pairs)
            pairs = rng.sample(pairs, min(self.args.pairs, available))
            self.pair_counts[kind] = {"available": available, "used": len(pairs)}
            if not os.path.exists(self.path("data", kind, "meta.json")):
                chosen = {p: next(g for g, c in zip(*self.teacher[p]) if c) for p, _ in pairs}
                self.write_rows(kind, [synthetic.schema_row(*p, [chosen[p], r], [True, False]) for p, r in pairs])
                self.preprocess(kind)

    def diagnostics(self) -> dict:
        import numpy as np

        from megatron_redi.data.dataset import TokenizedData
        from megatron_redi.eval.analysis import token_statistics
        from megatron_redi.model import from_pretrained
        from megatron_redi.parallel import initialize
        model = from_pretrained(self.start, initialize(tensor_parallel_size=1)).eval()
        out = {}
        for kind in KINDS:
            pairs = TokenizedData(self.path("data", kind)).pairs
            items = [pairs[i] for i in range(len(pairs))]
            stats = {}
            for side, seqs in (("chosen", [c for c, _ in items]), ("rejected", [r for _, r in items])):
                logps = token_statistics(model, [s.tokens.tolist() for s in seqs], [s.prompt_len for s in seqs])
                stats[f"{side}_logps_per_token"] = float(np.mean([lp.mean() for lp, _ in logps]))
            before = at = after = 0
            for c, r in items:
                cr, rr = c.tokens[c.prompt_len:], r.tokens[r.prompt_len:]
                n = min(len(cr), len(rr))
                d = next((i for i in range(n) if cr[i] != rr[i]), n)
                before, at, after = before + d, at + (d < len(rr)), after + max(len(rr) - d - 1, 0)
            total = before + at + after
            stats.update(share_before=before / total, share_at=at / total, share_after=after / total)
            with open(self.path("data", f"{kind}.jsonl")) as f:
                rejected = [json.loads(line)["generations"][1] for line in f]
            stats["decoy_share"] = sum(t.startswith("est ") for t in rejected) / len(rejected)
            out[kind] = {**stats, **self.pair_counts[kind]}
        return out

    # -- stage 2 ---------------------------------------------------------------------------------

    def runs(self) -> list[dict]:
        grid = []
        for lr in self.args.lrs:
            for seed in self.args.seeds:
                grid.append({"arm": "more SFT", "kind": None, "alpha": None, "lr": lr, "seed": seed})
                grid += [{"arm": f"alpha {alpha}", "kind": kind, "alpha": alpha, "lr": lr, "seed": seed}
                         for kind in KINDS for alpha in ALPHAS]
        for r in grid:
            r["name"] = ("more_sft" if r["kind"] is None else f"{r['kind']}_a{r['alpha']}") + f"_lr{r['lr']:g}_s{r['seed']}"
        return grid

    def stage2(self, r: dict) -> dict:
        summary = self.path("eval", r["name"], "summary.json")
        if not os.path.exists(summary):
            common = ["--optim.lr", r["lr"], "--data.seed", r["seed"], "--train.seed", r["seed"]]
            figure6 = r["kind"] == "planted" and r["lr"] == 2e-5 and r["seed"] == 0  # the Figure 6 panels
            if figure6:
                common += ["--eval.benchmark", self.path("data", "validation.jsonl"), "--eval.every", 4,
                           "--eval.max_problems", 100, "--eval.samples", 1, "--eval.temperature", 0,
                           "--eval.prompt", "chat", "--eval.force_think", "false", "--eval.max_new_tokens", 128]
            if r["kind"] is None:
                ckpt = self.train(r["name"], self.path("data", "teacher"), self.start, "--train.stage", "sft",
                                  "--loss.type", "sft", "--train.max_steps", self.args.pairs // 32, "--train.schedule",
                                  "max_steps", "--train.epochs", 100, *common)
            else:
                ckpt = self.train(r["name"], self.path("data", r["kind"]), self.start, "--train.stage", "pairwise",
                                  "--loss.type", "redi", "--loss.alpha", r["alpha"], "--train.epochs", 1, *common)
            self.sh(f"eval_{r['name']}", sys.executable, "tools/evaluate.py", "--checkpoint", ckpt, "--tokenizer",
                    self.path("data", "tokenizer"), "--benchmark", f"test={self.path('data', 'test.jsonl')}",
                    "--samples", 8, "--temperature", SAMPLING["temperature"], "--top-p", SAMPLING["top_p"],
                    "--max-new-tokens", SAMPLING["max_new_tokens"], "--prompt", "chat", "--no-force-think",
                    "--checker", "math-verify",  # the toy never writes "</think>", which the rllm grader needs
                    "--batch-size", 400, "--output", self.path("eval", r["name"]), "--no-progress", "--dtype", "fp32")
        with open(summary) as f:
            test = json.load(f)["checkpoints"][0]["benchmarks"]["test"]
        return {**r, "pass@1": 100 * test["pass@1"], "sem": 100 * test["sem"]}


@command
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--task", choices=("addition", "decoy"))
    p.add_argument("--output")
    p.add_argument("--mechanism", nargs=2, metavar=("SLIPS_RESULTS", "DECOYS_RESULTS"),
                   help="instead of a task: the registered test of the explanation on the results.json of "
                        "task A (addition) and task B (decoy), printed as a table")
    p.add_argument("--digits", type=int, default=6)
    p.add_argument("--train-problems", type=int, default=2000)
    p.add_argument("--stage1-lr", type=float, default=2e-3)
    p.add_argument("--stage1-epochs", type=int, default=30)
    p.add_argument("--plateau", choices=("registered", "settled"), default="registered",
                   help="stage 1's plateau rule (docs/toy_study.md: run 1 registered, run 2 settled)")
    p.add_argument("--pairs", type=int, default=640, help="pairs per kind of negatives")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 2e-5, 4e-5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seed", type=int, default=0, help="the data's")
    p.add_argument("--workers", type=int, default=2, help="stage-2 runs at a time")
    args = p.parse_args(argv)
    if args.mechanism:
        reports = []
        for path in args.mechanism:
            try:
                with open(path) as f:
                    reports.append(json.load(f))
            except (OSError, ValueError) as e:
                p.error(f"--mechanism: cannot read {path}: {e}")
        try:
            print(mechanism_table(mechanism(*reports)))
        except KeyError as e:
            p.error(f"--mechanism: {' / '.join(args.mechanism)} lack {e}: not the results.json of task A and task B")
        return 0
    if not (args.task and args.output):
        p.error("--task and --output are required (or --mechanism)")
    study = Study(args)
    study.data()
    study.stage1()
    sibling = study.sibling()
    print(f"stage 1: plateau at epoch {study.plateau_epoch}, sibling at epoch {study.sibling_epoch} "
          f"({study.stage1_curve})", flush=True)
    study.negatives(sibling)
    diagnostics = study.diagnostics()
    print(json.dumps(diagnostics, indent=1), flush=True)
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(study.stage2, study.runs()))
    decision = verdict(results, args.lrs, KINDS)
    report = {"task": args.task, "args": vars(args), "stage1_curve": study.stage1_curve,
              "plateau_epoch": study.plateau_epoch, "sibling_epoch": study.sibling_epoch, "negatives": diagnostics, "runs": results, "verdict": decision}
    with atomic_file(study.path("results.json")) as f:
        json.dump(report, f, indent=1)
    text = [f"# Toy study, task {args.task}", "", "pass@1 (%) on the test problems: mean ± std over seeds "
            f"{args.seeds} (largest SEM of the seeds' runs)", "", table(results, args.lrs), "", "## Verdict", ""]
    for kind, v in decision.items():
        gains = ", ".join(f"lr {lr}: {x['gain']:+.1f}{' (helps)' if x['helps'] else ''}" for lr, x in v["by_lr"].items())
        text.append(f"- {kind}: {'REDI 0.8 helps' if v['helps'] else 'REDI 0.8 does not help'} ({gains})")
    with atomic_file(study.path("results.md")) as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
