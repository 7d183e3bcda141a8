import math

import pytest
from multirank import run_ranks

from megatron_redi.eval import generate, last_boxed, load_benchmark, pass_at_k, summarize
from megatron_redi.eval.runner import BenchmarkError


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{42}.", "42"), ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{a_{n}+\\{x\\}}", "a_{n}+\\{x\\}"), ("no box", None), ("\\boxed{12", None), ("\\boxed 7 apples", "7"),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_sem_on_a_fixed_matrix():
    # 4 problems x 3 samples; per-sample benchmark scores P_j = 3/4, 1/4, 2/4
    correct = [[1, 0, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0]]
    s = summarize([[bool(x) for x in row] for row in correct])
    assert s["per_sample_pass@1"] == [0.75, 0.25, 0.5]
    assert s["pass@1"] == pytest.approx(0.5)
    population = math.sqrt(((0.25) ** 2 + (0.25) ** 2 + 0) / 3)  # numpy's default, as the reference used
    assert s["sem"] == pytest.approx(population / math.sqrt(3))
    sample = math.sqrt(((0.25) ** 2 + (0.25) ** 2 + 0) / 2)
    assert summarize([[bool(x) for x in row] for row in correct], ddof=1)["sem"] == pytest.approx(sample / math.sqrt(3))
    assert s["pass@3"] == pytest.approx(0.75)  # 3 of 4 problems have a right sample
    assert summarize([[True], [False]])["sem"] is None


def test_pass_at_k_estimator():
    assert pass_at_k(4, 0, 1) == 0 and pass_at_k(4, 4, 1) == 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_benchmark_errors_name_the_line(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "x"}\n')
    with pytest.raises(BenchmarkError, match="line 2: field 'answer'"):
        load_benchmark(str(tmp_path / "b.jsonl"))
    with pytest.raises(BenchmarkError, match="no such benchmark"):
        load_benchmark(str(tmp_path / "none.jsonl"))


PROMPTS = [[5, 9, 13, 2], [7, 3], [11, 12, 13, 14, 15, 16, 17]]


@pytest.mark.parametrize("arch,recompute", [("qwen2", "none"), ("qwen2", "full"), ("llama3", "none"), ("qwen3", "none")])
def test_greedy_with_kv_cache_equals_without(tiny_checkpoint, arch, recompute):
    from megatron_redi.model import from_pretrained

    model = from_pretrained(tiny_checkpoint(arch=arch, num_kv_heads=2), recompute=recompute)
    cached = generate(model, PROMPTS, 16, stop_ids=set(), use_cache=True)
    plain = generate(model, PROMPTS, 16, stop_ids=set(), use_cache=False)
    assert cached == plain and all(len(o) == 16 for o in cached)


def test_sampling_is_seeded_and_stops_at_stop_tokens(tiny_checkpoint):
    from megatron_redi.model import from_pretrained

    model = from_pretrained(tiny_checkpoint())
    a = generate(model, PROMPTS, 12, set(), temperature=1.0, top_p=0.9, seed=3)
    b = generate(model, PROMPTS, 12, set(), temperature=1.0, top_p=0.9, seed=3)
    assert a == b
    stop = a[0][4]
    cut = generate(model, PROMPTS, 12, {stop}, temperature=1.0, top_p=0.9, seed=3)
    assert cut[0] == a[0][:a[0].index(stop) + 1]  # the same draws, cut after the first stop token


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generations_do_not_depend_on_the_batch(tiny_checkpoint, temperature):
    """Continuous batching: each (prompt, sample) job has its own seed, so batch sizes 1, 3 and 32
    (slots refilled as jobs end at different lengths) and static batching give the same tokens,
    and the cache gives what recomputing everything gives."""
    from megatron_redi.eval.generate import generate_samples
    from megatron_redi.model import from_pretrained

    model = from_pretrained(tiny_checkpoint(num_kv_heads=2))
    prompts = PROMPTS * 3
    free = generate_samples(model, prompts, 2, 24, set(), temperature, 0.9, seed=5)
    stops = {free[0][0][3], free[1][1][8]}  # some jobs stop within a few tokens, some run to the limit
    runs = [generate_samples(model, prompts, 2, 24, stops, temperature, 0.9, seed=5, batch_size=size, refill=refill)
            for size, refill in ((1, True), (3, True), (32, True), (3, False))]
    assert all(run == runs[0] for run in runs[1:])
    lengths = [len(g) for row in runs[0] for g in row]
    assert min(lengths) < 24 and max(lengths) == 24  # jobs of different lengths shared the slots
    if temperature:
        assert runs[0][0][0] != runs[0][0][1]  # two samples of one prompt differ
    plain = generate(model, prompts, 24, stops, temperature, 0.9, seed=5, use_cache=False)
    assert plain == [row[0] for row in runs[0]]


def _tp_generation(path):
    from megatron_redi.model import from_pretrained
    from megatron_redi.parallel import initialize

    reference = from_pretrained(path)
    model = from_pretrained(path, initialize(tensor_parallel_size=2, sequence_parallel=True))
    want = generate(reference, PROMPTS, 10, set())
    got = generate(model, PROMPTS, 10, set())
    assert got == want
    assert model.parallel.sequence_parallel  # restored after generation


def test_tp2_generation_equals_tp1(tiny_checkpoint):
    run_ranks(2, _tp_generation, tiny_checkpoint(num_kv_heads=1))


@pytest.mark.parametrize("content,message", [
    (b'[1, 2]\n', "line 1: a JSON list, not an object"),
    (b'{"problem": 7, "answer": "1"}\n', "line 1: field 'problem' is missing or not a non-empty string"),
    (b'{"problem": "p", "answer": "1"}\n{"problem": "\xff", "answer": "2"}\n', "line 2: not UTF-8"),
    (b'{"problem": "p", "answer": true}\n', "line 1: field 'answer'"),
])
def test_malformed_benchmark_lines_are_named(tmp_path, content, message):
    path = tmp_path / "b.jsonl"
    path.write_bytes(content)
    with pytest.raises(BenchmarkError, match=message):
        load_benchmark(str(path))


def test_the_default_protocol_is_the_paper_s_and_is_recorded():
    from megatron_redi.eval import Protocol
    from megatron_redi.training import load_config

    p = Protocol()
    assert (p.samples, p.temperature, p.top_p, p.max_new_tokens, p.prompt, p.force_think, p.sem_ddof, p.checker) == \
        (16, 0.6, 0.95, 32768, "lighteval", True, 0, "math-verify")
    assert p.record()["sem_std"] == "population (ddof 0)" and p.record()["checker"] == "math-verify"
    in_training = Protocol.record(load_config(None, ["--model.path", "m", "--data.path", "d"]).eval)
    # the trainer's quick look decodes and scores as the paper does, on fewer, shorter samples
    assert in_training == {**p.record(), "samples": 1, "max_new_tokens": 4096, "name": "custom"}
    assert Protocol(temperature=0).record()["top_p"] == 1.0
    with pytest.raises(ValueError, match="prompt must be one of"):
        Protocol(prompt="fancy")


def test_generations_made_elsewhere_are_scored_as_evaluate_scores_its_own(tiny_checkpoint, tiny_tokenizer_dir):
    """The inference-engine path (vLLM): prompts as text, generations scored by score()."""
    from transformers import AutoTokenizer

    from megatron_redi.eval import Protocol, build_prompt, evaluate, prompt_text, score
    from megatron_redi.model import from_pretrained

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    problems = [{"problem": f"{i} + 1", "answer": str(i + 1)} for i in range(3)]
    protocol = Protocol(samples=2, max_new_tokens=5)
    results, summary = evaluate(from_pretrained(tiny_checkpoint()), tokenizer, problems, protocol)
    again, again_summary = score(problems, [r["generations"] for r in results], [r["lengths"] for r in results], protocol)
    assert again == results and again_summary == summary
    text = prompt_text(tokenizer, "1 + 1", "lighteval", True)
    assert text.endswith("<think>\n") and "\\boxed{ANSWER}" in text
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == build_prompt(tokenizer, "1 + 1", "lighteval", True)
    with pytest.raises(ValueError, match="need 2 generations for each of the 3 problems"):
        score(problems, [["x"]] * 3, [[1]] * 3, protocol)


# Qwen2.5-Math's chat template, as far as one user turn goes: its default system prompt, the turn,
# the assistant header. The paper's models replaced the header's newline by a forced "<think>\n".
QWEN_MATH_TEMPLATE = ("{{ '<|im_start|>system\\nPlease reason step by step, and put your final answer within "
                      "\\\\boxed{}.<|im_end|>\\n' }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + "
                      "m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
                      "{{ '<|im_start|>assistant\\n' }}{% endif %}")


# the user turn of "What is $1 + 1$?" in LightEval's template, the reference's byte for byte (two spaces
# after "clearly.")
USER_TURN = ("<|im_start|>user\nSolve the following math problem efficiently and clearly.  The last line of your "
            "response should be of the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope "
            "it is correct' (without quotes) where ANSWER is just the final number or expression that solves the "
            "problem. Think step by step before answering.\n\nWhat is $1 + 1$?<|im_end|>\n")


def test_the_prompt_is_the_reference_s_byte_for_byte(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from megatron_redi.eval import build_prompt, prompt_text

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.chat_template = QWEN_MATH_TEMPLATE
    want = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
            + USER_TURN + "<|im_start|>assistant<think>\n")
    assert prompt_text(tokenizer, "What is $1 + 1$?", "lighteval", True) == want
    assert build_prompt(tokenizer, "What is $1 + 1$?", "lighteval", True) == \
        tokenizer(want, add_special_tokens=False)["input_ids"]
    # a template that forces the thinking itself (the paper's models') is left as it is
    tokenizer.chat_template = QWEN_MATH_TEMPLATE.replace("assistant\\n' }}", "assistant<think>\\n' }}")
    assert prompt_text(tokenizer, "What is $1 + 1$?", "lighteval", True) == want
    assert prompt_text(tokenizer, "x", "chat", False).endswith("<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant<think>\n")



# Shaped like Qwen3-Base's chat template (written here, not copied): no default system turn; an
# assistant turn after the last user turn is written with its thinking block ("<think>\n...\n</think>\n\n",
# empty when the content has none); the generation prompt "<|im_start|>assistant\n", with an empty
# thinking block when enable_thinking is false.
QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' and loop.index0 > ns.last_user -%}"
    "{%- set thought = m['content'].split('</think>')[0].split('<think>')[-1] if '</think>' in m['content'] else '' -%}"
    "{%- set answer = m['content'].split('</think>')[-1] -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' + answer.lstrip('\\n') "
    "+ '<|im_end|>\\n' -}}"
    "{%- else -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}")


def test_a_qwen3_prompt_opens_the_thinking_block_as_its_template_does(tiny_tokenizer_dir, tmp_path):
    """Qwen3's own template, "<think>" forced after the assistant header's newline: byte for byte,
    and the prefix of every training sequence that preprocessing renders with the same template."""
    from transformers import AutoTokenizer

    from megatron_redi.data.preprocess import Templater
    from megatron_redi.eval import build_prompt, prompt_text

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tokenizer.chat_template = QWEN3_TEMPLATE
    want = USER_TURN + "<|im_start|>assistant\n<think>\n"
    assert prompt_text(tokenizer, "What is $1 + 1$?", "lighteval", True) == want
    assert build_prompt(tokenizer, "What is $1 + 1$?", "lighteval", True) == \
        tokenizer(want, add_special_tokens=False)["input_ids"]
    assert prompt_text(tokenizer, "1+1", "chat", False).endswith("<|im_end|>\n<|im_start|>assistant\n")

    tokenizer.save_pretrained(tmp_path / "qwen3_tokenizer")
    templater = Templater(str(tmp_path / "qwen3_tokenizer"))
    assert templater.end_of_turn == "<|im_end|>\n"
    trained = templater.prompt("1+1") + templater.response("<think>\n1 plus 1 is 2.\n</think>\n\n\\boxed{2}")
    text = tokenizer.decode(trained)
    assert text.startswith(prompt_text(tokenizer, "1+1", "chat", True)) and text.endswith("<|im_end|>\n<|endoftext|>")


def test_generation_stops_where_the_model_s_positions_end_and_is_counted(tiny_checkpoint, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from megatron_redi.eval import Protocol, build_prompt, evaluate
    from megatron_redi.model import from_pretrained

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    problems = [{"problem": "1 + 1", "answer": "2"}, {"problem": "2 + 2 + 2 + 2 + 2 + 2", "answer": "12"}]
    prompt_lengths = [len(build_prompt(tokenizer, p["problem"], "lighteval", True)) for p in problems]
    positions = max(prompt_lengths) + 4  # the longer prompt leaves 4 positions, the shorter a few more
    model = from_pretrained(tiny_checkpoint(), max_position_embeddings=positions)
    results, summary = evaluate(model, tokenizer, problems, Protocol(samples=2, max_new_tokens=40))
    for row, n in zip(results, prompt_lengths):
        assert all(length <= positions - n for length in row["lengths"])
    assert results[1]["capped"] == [j for j, n in enumerate(results[1]["lengths"]) if n == 4]
    assert summary["capped_generations"] == sum(len(r.get("capped", ())) for r in results) >= 1
    plain = generate(model, [build_prompt(tokenizer, problems[1]["problem"], "lighteval", True)], 40, set(),
                     use_cache=False)
    assert len(plain[0]) == 4  # the reference path stops there too
