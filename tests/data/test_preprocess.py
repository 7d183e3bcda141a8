"""Hand-made raw rows for every selection rule, and the report of bad input."""

import json
import os

import numpy as np
import pytest

from megatron_redi.data import TokenizedData
from megatron_redi.data.preprocess import Options, StrictModeError, Templater, choose, preprocess
from megatron_redi.data.raw import RawDataError


def row(gens=("good", "bad"), llama=(True, False), mv=(True, False), valid="Yes", source="olympiads",
        problem="Compute 1+2."):
    return {"problem": problem, "generations": list(gens), "problem_is_valid": valid, "source": source,
            "correctness": {"llama_verification": list(llama), "math_verify_answer": list(mv),
                            "math_verify_reparsed_answer": list(mv)}}


OPTS = Options(tokenizer="unused")


@pytest.mark.parametrize("record,expected", [
    (row(), ([], 0, 1)),
    # both verifiers must agree for "correct": generation 0 fails math-verify, 1 is the correct one
    (row(gens=("a", "b"), llama=(True, True), mv=(False, True)), ([], 1, 0)),
    (row(gens=("a", "b"), llama=(True, True), mv=(True, True)), (["no_incorrect_generation"], 0, None)),
    (row(gens=("a", "b"), llama=(False, True), mv=(True, False)), (["no_correct_generation"], None, None)),
    (row(valid="no"), (["invalid_problem"], None, None)),
    (row(valid="YES"), ([], 0, 1)),
    (row(source="cn_k12"), (["excluded_source"], None, None)),
    # an empty generation is one like any other, as the reference took them
    (row(gens=("", "good", "bad"), llama=(True, True, False), mv=(True, True, False)), ([], 0, 2)),
    (row(gens=("good", "", "bad"), llama=(True, False, False), mv=(True, False, False)), ([], 0, 1)),
    # labels may be strings or missing (None counts as not verified)
    (row(gens=("a", "b"), llama=("True", None), mv=(True, True)), ([], 0, 1)),
])
def test_selection_rules(record, expected):
    assert choose(record, 0, OPTS) == expected


def test_either_rule_accepts_one_verifier():
    record = row(gens=("a", "b"), llama=(True, False), mv=(False, False))
    assert choose(record, 0, Options(tokenizer="unused", correctness="either")) == ([], 0, 1)
    assert choose(record, 0, OPTS)[1] is None


def test_the_paper_s_choice_is_the_first_correct_and_first_incorrect_in_row_order():
    # 8 generations, correct ones at 2, 5, 6 and incorrect at 0, 1, 3, 4, 7: the reference takes 2 and 0
    correct = [False, False, True, False, False, True, True, False]
    record = row(gens=[f"g{i}" for i in range(8)], llama=correct, mv=correct)
    assert [choose(record, key, OPTS)[1:] for key in range(20)] == [(2, 0)] * 20
    shuffled = {choose(record, key, Options(tokenizer="unused", shuffle_generations=True))[1:] for key in range(20)}
    assert len(shuffled) > 1 and shuffled != {(2, 0)}  # the opt-in departure chooses otherwise
    assert all(correct[c] and not correct[r] for c, r in shuffled)
    again = Options(tokenizer="unused", shuffle_generations=True)
    assert choose(record, 5, again) == choose(record, 5, again)  # seeded


def test_end_to_end_choice_follows_the_row_order(tiny_tokenizer_dir, tmp_path):
    """Hand-made rows where a shuffled visit would choose other generations: the output holds the
    first correct and the first incorrect generation of each row."""
    correct = [False, True, False, True, True]
    records = [row(problem=f"Compute {i}+1.", gens=[f"answer {i} number {j}" for j in range(5)], llama=correct,
                   mv=correct) for i in range(6)]
    _write(tmp_path / "a.jsonl", records)
    report = preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), Options(tokenizer=tiny_tokenizer_dir),
                        progress=False)
    items = TokenizedData(str(tmp_path / "out")).pairs.items
    assert report["pairs"] == 6 and set(items["chosen_gen"]) == {1} and set(items["rejected_gen"]) == {0}
    other = preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "shuffled"),
                       Options(tokenizer=tiny_tokenizer_dir, shuffle_generations=True), progress=False)
    moved = TokenizedData(str(tmp_path / "shuffled")).pairs.items
    assert other["pairs"] == 6 and (set(moved["chosen_gen"]) != {1} or set(moved["rejected_gen"]) != {0})


@pytest.mark.parametrize("record,reason", [
    ({k: v for k, v in row().items() if k != "source"}, "missing_field"),
    (dict(row(), generations="text"), "wrong_type"),
    (dict(row(), correctness={"llama_verification": [True, False]}), "missing_field"),
    (dict(row(), correctness={"llama_verification": [True], "math_verify_reparsed_answer": [True, False]}),
     "verifier_length_mismatch"),
    (dict(row(), correctness={"llama_verification": [1, 0], "math_verify_reparsed_answer": [True, False]}),
     "wrong_type"),
])
def test_malformed_rows_name_their_reason(record, reason):
    with pytest.raises(ValueError) as e:
        choose(record, 0, OPTS)
    assert e.value.args[0] == reason


def test_templater_builds_prompt_and_response(tiny_tokenizer_dir):
    t = Templater(tiny_tokenizer_dir)
    assert t.end_of_turn == "<|im_end|>\n"
    prompt = t.tok.decode(t.prompt("Compute 1+2."))
    assert prompt.startswith("<|im_start|>system\nPlease reason step by step") and prompt.endswith("<|im_start|>assistant\n")
    response = t.response("1+2=3")
    assert t.tok.decode(response) == "1+2=3<|im_end|>\n<|endoftext|>" and response[-1] == t.tok.eos_token_id


def _write(path, records, extra_lines=()):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def test_end_to_end_outputs_and_report(tiny_tokenizer_dir, tmp_path):
    records = [row(problem=f"Compute {i}+1.") for i in range(5)]
    records += [row(source="cn_k12"), row(gens=("a", "b"), llama=(True, True), mv=(True, True))]
    records += [dict(row(), correctness={"llama_verification": [True], "math_verify_reparsed_answer": [True, False]})]
    records += [row(gens=("x" * 300, "bad"), problem="Long one.")]  # a long chosen trace
    _write(tmp_path / "a.jsonl", records, extra_lines=["{not json"])
    opts = Options(tokenizer=tiny_tokenizer_dir, max_response_tokens=100)
    report = preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), opts, progress=False)
    assert report["rows_read"] == 10
    assert report["sft_rows"] == 7  # 5 plain + the all-correct row + the long one
    assert report["pairs"] == 5
    assert report["dropped"] == {"excluded_source": 1, "invalid_json": 1, "no_incorrect_generation": 1,
                                 "response_too_long": 1, "verifier_length_mismatch": 1}
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report

    data = TokenizedData(str(tmp_path / "out"))
    t = Templater(tiny_tokenizer_dir)
    chosen, rejected = data.pairs[2]
    assert np.array_equal(chosen.tokens[:chosen.prompt_len], t.prompt("Compute 2+1."))
    assert chosen.tokens[chosen.prompt_len:].tolist() == t.response("good")
    assert rejected.tokens[rejected.prompt_len:].tolist() == t.response("bad")
    assert data.pairs.items[2]["row"] == 2 and data.pairs.items[2]["rejected_gen"] == 1
    assert len(data.sft) == 7 and data.sft[0].response_len == len(t.response("good"))
    assert os.path.exists(tmp_path / "out" / "tokenizer" / "tokenizer.json")


def test_workers_give_the_same_output(tiny_tokenizer_dir, tmp_path):
    from megatron_redi.data import synthetic

    synthetic.write_corpus(str(tmp_path / "raw.jsonl"), rows=300)
    opts = Options(tokenizer=tiny_tokenizer_dir)
    one = preprocess([str(tmp_path / "raw.jsonl")], str(tmp_path / "w1"), opts, workers=1, progress=False)
    two = preprocess([str(tmp_path / "raw.jsonl")], str(tmp_path / "w2"), opts, workers=2, progress=False)
    assert one == two
    for part in ("sft", "pairs"):
        for name in ("tokens.bin", "items.npy"):
            assert (tmp_path / "w1" / part / name).read_bytes() == (tmp_path / "w2" / part / name).read_bytes()


def test_parquet_and_saved_dataset_inputs(tiny_tokenizer_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([row(problem=f"Compute {i}+1.") for i in range(4)])
    pq.write_table(table, tmp_path / "a.parquet")
    saved = tmp_path / "saved"
    saved.mkdir()
    with pa.OSFile(str(saved / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    report = preprocess([str(tmp_path / "a.parquet"), str(saved)], str(tmp_path / "out"),
                        Options(tokenizer=tiny_tokenizer_dir), progress=False)
    assert report["rows_read"] == 8 and report["pairs"] == 8


def test_strict_mode_names_file_and_row(tiny_tokenizer_dir, tmp_path):
    bad = dict(row(), generations=["a"])  # labels for 2 generations, 1 generation
    _write(tmp_path / "a.jsonl", [row(), bad])
    with pytest.raises(StrictModeError, match=r"a.jsonl: row 1: correctness.llama_verification has 2 labels for 1"):
        preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out"),
                   Options(tokenizer=tiny_tokenizer_dir, strict=True), progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_unreadable_file_is_counted_or_fatal(tiny_tokenizer_dir, tmp_path):
    _write(tmp_path / "ok.jsonl", [row()])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    inputs = [str(tmp_path / "broken.parquet"), str(tmp_path / "ok.jsonl")]
    report = preprocess(inputs, str(tmp_path / "out"), Options(tokenizer=tiny_tokenizer_dir), progress=False)
    assert report["dropped"] == {"unreadable_file": 1} and report["pairs"] == 1
    with pytest.raises(StrictModeError, match="broken.parquet: row -1: unreadable file"):
        preprocess(inputs, str(tmp_path / "out2"), Options(tokenizer=tiny_tokenizer_dir, strict=True), progress=False)


def test_command_line_errors_exit_2(tiny_tokenizer_dir, tmp_path):
    import subprocess
    import sys

    def tool(*args):
        return subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                                                            "preprocess_data.py"), *map(str, args)],
                              capture_output=True, text=True)

    done = tool("--input", tmp_path / "missing.jsonl", "--tokenizer", tiny_tokenizer_dir, "--output-dir", tmp_path / "o",
                "--no-progress")
    assert done.returncode == 2 and "missing.jsonl: no such file" in done.stderr
    _write(tmp_path / "a.jsonl", [row()])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("keep")
    done = tool("--input", tmp_path / "a.jsonl", "--tokenizer", tiny_tokenizer_dir, "--output-dir", tmp_path / "o",
                "--no-progress")
    assert done.returncode == 2 and "not empty" in done.stderr


def test_an_unreachable_hub_input_is_a_clear_error(tiny_tokenizer_dir, tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):  # what load_dataset raises without a network, after its retries
        raise ConnectionError("Couldn't reach 'open-r1/OpenR1-Math-Raw' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    from megatron_redi.data.raw import RawDataError
    with pytest.raises(RawDataError, match="hub:open-r1/OpenR1-Math-Raw: cannot be read from the Hub .*Couldn't reach"):
        preprocess(["hub:open-r1/OpenR1-Math-Raw"], str(tmp_path / "o"), Options(tokenizer=tiny_tokenizer_dir),
                   progress=False)
    assert not os.path.exists(tmp_path / "o")


def test_a_non_utf8_line_costs_only_its_row(tiny_tokenizer_dir, tmp_path):
    lines = [json.dumps(row(problem=f"Compute {i}+1.")).encode() for i in range(4)]
    lines[1] = lines[1].replace(b"Compute", b"Comp\xffute")
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    report = preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), Options(tokenizer=tiny_tokenizer_dir),
                        progress=False)
    assert report["pairs"] == 3 and report["dropped"] == {"invalid_utf8": 1}  # rows 2 and 3 still read
    with pytest.raises(StrictModeError, match=r"a.jsonl: row 1: not UTF-8"):
        preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out2"),
                   Options(tokenizer=tiny_tokenizer_dir, strict=True), progress=False)


@pytest.mark.parametrize("source", [["a", "b"], {"name": "x"}, 3])
def test_a_source_that_is_not_a_string_is_wrong_type(source):
    with pytest.raises(ValueError) as e:
        choose(dict(row(), source=source), 0, OPTS)
    assert e.value.args[0] == "wrong_type"


def test_an_empty_result_is_an_error_and_writes_nothing(tiny_tokenizer_dir, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    _write(tmp_path / "excluded.jsonl", [row(source="cn_k12")])
    for name in ("empty.jsonl", "excluded.jsonl"):
        with pytest.raises(RawDataError, match=rf"{name}: no SFT row and no pair out of"):
            preprocess([str(tmp_path / name)], str(tmp_path / "out"), Options(tokenizer=tiny_tokenizer_dir),
                       progress=False)
        assert not os.path.exists(tmp_path / "out")


def test_a_garbage_parquet_file_alone_is_named(tiny_tokenizer_dir, tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StrictModeError, match="broken.parquet: row -1: unreadable file"):
        preprocess([str(tmp_path / "broken.parquet")], str(tmp_path / "out"),
                   Options(tokenizer=tiny_tokenizer_dir, strict=True), progress=False)
    with pytest.raises(RawDataError, match=r"no SFT row and no pair out of 0 rows read \(dropped: \{'unreadable_file': 1\}"):
        preprocess([str(tmp_path / "broken.parquet")], str(tmp_path / "out"), Options(tokenizer=tiny_tokenizer_dir),
                   progress=False)


HUGE_ROW = r'''
import json, resource, sys
from megatron_redi.data.preprocess import Options, preprocess
row = json.loads(sys.argv[3])
size = int(sys.argv[4])
with open(sys.argv[2] + "/raw.jsonl", "w") as f:
    for i in range(3):
        f.write(json.dumps(dict(row, problem=f"Compute {i}+1.")) + "\n")
    if size:
        f.write(json.dumps(dict(row, generations=["good", "x" * size])) + "\n")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = preprocess([sys.argv[2] + "/raw.jsonl"], sys.argv[2] + "/out", Options(tokenizer=sys.argv[1]), progress=False)
print(json.dumps({"grew_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                  "dropped": report["dropped"], "pairs": report["pairs"]}))
'''


def test_a_huge_generation_is_refused_without_tokenising_it(tiny_tokenizer_dir, tmp_path):
    """Memory stays bounded by the limits whatever a row holds: a 50 MB generation (whose
    tokenisation would take gigabytes) adds no more than its own text to the peak."""
    import subprocess
    import sys

    runs = {}
    for size in (0, 50 * 2**20):
        work = tmp_path / str(size)
        work.mkdir()
        done = subprocess.run([sys.executable, "-c", HUGE_ROW, tiny_tokenizer_dir, str(work), json.dumps(row()), str(size)],
                              capture_output=True, text=True, check=True)
        runs[size] = json.loads(done.stdout.strip().splitlines()[-1])
    huge = runs[50 * 2**20]
    assert huge["dropped"] == {"response_too_long": 1} and huge["pairs"] == 3
    # the line, its parsed string and the row's copies in the batch: a few times 50 MB, not gigabytes
    assert huge["grew_mib"] - runs[0]["grew_mib"] < 400, runs


def test_long_sft_sequences_are_truncated_by_default_and_every_stage_is_counted(tiny_tokenizer_dir, tmp_path):
    long = " ".join(f"step {i}" for i in range(200))
    records = [row(problem="Compute 1+1."), row(problem="Compute 2+1.", gens=(long, "bad")),
               row(problem="Compute 3+1.", gens=("good", long))]
    _write(tmp_path / "a.jsonl", records)
    opts = Options(tokenizer=tiny_tokenizer_dir, max_sft_tokens=60, max_response_tokens=50)
    report = preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out"), opts, progress=False)
    assert (report["rows_read"], report["sft_rows"], report["sft_truncated"]) == (3, 3, 1)
    assert (report["pairs_before_length_filter"], report["pairs"]) == (3, 1)
    assert report["dropped"] == {"response_too_long": 2}
    sft = TokenizedData(str(tmp_path / "out")).sft
    t = Templater(tiny_tokenizer_dir)
    cut = sft[1]
    assert len(cut.tokens) == 60 and cut.tokens[:cut.prompt_len].tolist() == t.prompt("Compute 2+1.")
    assert cut.tokens[cut.prompt_len:].tolist() == t.response(long)[:60 - cut.prompt_len]  # the start, no EOS
    dropped = preprocess([str(tmp_path / "a.jsonl")], str(tmp_path / "out2"),
                         Options(tokenizer=tiny_tokenizer_dir, max_sft_tokens=60, max_response_tokens=50,
                                 drop_long_sft=True), progress=False)
    assert (dropped["sft_rows"], dropped["sft_truncated"]) == (2, 0)
    assert dropped["dropped"] == {"response_too_long": 2, "sft_too_long": 1}


# A Qwen2.5-Math-style template: its default system prompt whenever the conversation does not start
# with one (so also around a response rendered alone, as the reference's length study rendered it)
QWEN_MATH_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nPlease reason step by step, "
                      "and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}{% endif %}{% for m in messages %}"
                      "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_the_pair_filter_counts_as_the_reference_did(tiny_tokenizer_dir, tmp_path):
    """The reference's length study: the prompt as the user turn without the generation prompt, plus
    one; each response rendered as a conversation of its own (system prompt, assistant header,
    end of turn), plus one; a pair kept when the prompt is at most 800 and both responses at most
    19,000 (here: limits set at the boundary of hand-made rows)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.chat_template = QWEN_MATH_TEMPLATE
    tok.save_pretrained(tmp_path / "tok")

    def count(messages):  # the study's count, written out here as the specification
        return len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]) + 1

    problem, good, bad = "Compute 1+2.", "so 1 + 2 = 3 " * 5, "so 1 + 2 = 4 " * 6
    prompt_len = count([{"role": "user", "content": problem}])
    response_len = max(count([{"role": "assistant", "content": g}]) for g in (good, bad))
    (tmp_path / "raw.jsonl").write_text(json.dumps(row(gens=(good, bad), problem=problem)) + "\n")

    def pairs_kept(max_prompt, max_response):
        out = tmp_path / f"out_{max_prompt}_{max_response}"
        report = preprocess([str(tmp_path / "raw.jsonl")], str(out), Options(
            tokenizer=str(tmp_path / "tok"), max_prompt_tokens=max_prompt, max_response_tokens=max_response),
            progress=False)
        return report["pairs"], report["dropped"]

    assert pairs_kept(prompt_len, response_len) == (1, {})
    assert pairs_kept(prompt_len - 1, response_len) == (0, {"prompt_too_long": 1})
    assert pairs_kept(prompt_len, response_len - 1) == (0, {"response_too_long": 1})
    # what is trained on is counted otherwise: the prompt with the generation prompt opened, the
    # response without a system prompt of its own
    templater = Templater(str(tmp_path / "tok"))
    header = len(tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"])  # 3 for Qwen's vocabulary
    assert len(templater.prompt(problem)) == prompt_len - 1 + header
    assert len(templater.response(bad)) < response_len - 10
