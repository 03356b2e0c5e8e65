"""`rlhfx sample`: post-processors on hand-made reward tables, reward sources, atomic JSONL, and the
sample -> sft / sample -> dpo chains on the SFT'd tiny model."""

import json

import pytest
from cli_inprocess import run_cli  # noqa: F401
from e2e import rlhfx, summary

from rlhfx.errors import RlhfxError
from rlhfx.sampling.jsonl import read_jsonl, write_jsonl_atomic
from rlhfx.sampling.postprocess import conditional_sft, iterative_dpo, post_process, rejection_sampling, z_normalize


def _row(prompt: str, output: str, reward: float) -> dict:
    return {"input": f"<u>{prompt}</u>", "output": output, "reward": reward,
            "prompt": [{"role": "user", "content": prompt}]}


# Three prompts; "b" appears in two separate runs of rows (a duplicated prompt); "c" has only ties.
TABLE = [
    _row("a", "a1", 0.5), _row("a", "a2", 1.0), _row("a", "a3", 1.0), _row("a", "a4", -0.5),
    _row("b", "b1", 0.0), _row("c", "c1", 0.3), _row("c", "c2", 0.3),
    _row("b", "b2", 2.0), _row("b", "b3", 0.0),
]


def test_rs_keeps_the_first_best_answer_per_distinct_input():
    out = rejection_sampling(TABLE)
    assert [r["output"] for r in out.rows] == ["a2", "b2", "c1"]  # a2 beats the tied a3 by coming first
    assert out.rows[0] == {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "a2"}],
                           "input": "<u>a</u>", "output": "a2", "reward": 1.0, "finished": True}
    assert out.stats == {"rows_in": 9, "prompts": 3, "rows_out": 3, "unfinished_skipped": 0,
                         "prompts_without_finished": 0}


def test_rs_skips_answers_cut_off_at_max_new_tokens_and_keeps_the_flag():
    rows = [{**_row("a", "a1", 2.0), "finished": False}, {**_row("a", "a2", 1.0), "finished": True},
            {**_row("b", "b1", 3.0), "finished": False}, _row("c", "c1", 0.5)]  # c: no flag (OpenRLHF data)
    out = rejection_sampling(rows)
    assert [(r["output"], r["finished"]) for r in out.rows] == [("a2", True), ("c1", True)]
    assert out.stats == {"rows_in": 4, "prompts": 3, "rows_out": 2, "unfinished_skipped": 2,
                         "prompts_without_finished": 1}


def test_csft_writes_the_reward_into_input_and_last_user_turn():
    rows = [_row("a", "x", 0.25), {"input": "plain", "output": "y", "reward": -1.04}]
    out = conditional_sft(rows)
    assert out.rows[0]["input"] == "<u>a</u> <rm_score>: 0.25 "
    assert out.rows[0]["messages"] == [{"role": "user", "content": "a <rm_score>: 0.25 "},
                                       {"role": "assistant", "content": "x"}]
    assert out.rows[1]["messages"][0] == {"role": "user", "content": "plain <rm_score>: -1.04 "}
    custom = conditional_sft(rows, "[{reward}] {input}")
    assert custom.rows[0]["input"] == "[0.25] <u>a</u>"
    with pytest.raises(RlhfxError):
        conditional_sft(rows, "no placeholders")
    assert rows[0]["prompt"] == [{"role": "user", "content": "a"}]  # inputs are not modified


def test_iter_dpo_pairs_best_with_worst_and_drops_ties():
    out = iterative_dpo(TABLE)
    assert out.rows == [
        {"prompt": [{"role": "user", "content": "a"}], "chosen": "a2", "chosen_reward": 1.0,
         "rejected": "a4", "rejected_reward": -0.5},
        {"prompt": [{"role": "user", "content": "b"}], "chosen": "b2", "chosen_reward": 2.0,
         "rejected": "b1", "rejected_reward": 0.0},
    ]
    assert out.stats == {"rows_in": 9, "prompts": 3, "pairs": 2, "ties_dropped": 1}
    single = iterative_dpo([_row("s", "only", 1.0)])
    assert single.rows == [] and single.stats["ties_dropped"] == 1


def test_z_normalize_and_unscored_rows():
    assert z_normalize([1.0, 2.0, 3.0]) == pytest.approx([-1.0, 0.0, 1.0])
    assert z_normalize([4.0, 4.0]) == [0.0, 0.0]
    with pytest.raises(RlhfxError, match="reward"):
        post_process("rs", [{"input": "x", "output": "y"}])


def test_post_processed_rows_load_as_sft_and_pairwise_data(tmp_path):
    from rlhfx.data.loader import DataConfig, load_data

    for name, kind in (("rs", "sft"), ("csft", "sft"), ("iter_dpo", "pairwise")):
        path = write_jsonl_atomic(tmp_path / f"{name}.jsonl", post_process(name, TABLE).rows)
        rows, _, report = load_data(DataConfig(datasets=[str(path)], kind=kind))
        assert len(rows) == len(read_jsonl(path)) and report.total_dropped == 0, name


def test_jsonl_write_is_atomic(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl_atomic(target, [{"a": 1}])
    with pytest.raises(TypeError):
        write_jsonl_atomic(target, [{"a": 2}, {"b": object()}])
    assert read_jsonl(target) == [{"a": 1}]  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # and no temp file is left


def test_reward_functions(tmp_path):
    from rlhfx.rewards.functions import call_reward_func, load_reward_func

    demo = load_reward_func("demo")
    assert demo(["Q: The red fox is calm.", "Q: I do not know."], ["Q: ", "Q: "], ["red fox", "red fox"]) == [1.0, 0.0]
    file = tmp_path / "length.py"
    file.write_text("def reward_func(queries, prompts, labels):\n"
                    "    return [len(q) - len(p) for q, p in zip(queries, prompts)]\n")
    assert call_reward_func(load_reward_func(str(file)), ["ab", "abcd"], ["a", "a"], [None, None], "f") == [1.0, 3.0]
    (tmp_path / "none.py").write_text("x = 1\n")
    (tmp_path / "short.py").write_text("def reward_func(q, p, l):\n    return [1.0]\n")
    for bad in ("missing.py", str(tmp_path / "none.py"), "nonsense"):
        with pytest.raises(RlhfxError):
            load_reward_func(bad)
    with pytest.raises(RlhfxError, match="2 queries"):
        call_reward_func(load_reward_func(str(tmp_path / "short.py")), ["a", "b"], ["", ""], [None, None], "short")


def test_sample_generate_then_rs_then_sft(sft_model, tmp_path, run_cli):
    generated = tmp_path / "gen.jsonl"
    code, output = run_cli("sample", "--model", sft_model, "--dataset", "demo-prompts#12", "--best_of_n", "4",
                           "--max_new_tokens", "16", "--rollout_batch_size", "5", "--iter", "1", "--output_file",
                           generated)
    assert code == 0 and "samples/s" in output, output
    rows = read_jsonl(generated)
    assert len(rows) == 5 * 4 and {r["index"] for r in rows} == {5, 6, 7, 8, 9}
    assert set(rows[0]) >= {"input", "output", "prompt", "label"}
    assert rows[0]["input"].startswith("<|im_start|>user\n") and rows[0]["input"].endswith("<|im_start|>assistant\n")
    assert len({r["output"] for r in rows}) > 1

    rs = tmp_path / "rs.jsonl"
    code, output = run_cli("sample", "--task", "rm", "--dataset", generated, "--reward_func", "demo",
                           "--post_processor", "rs", "--output_file", rs)
    assert code == 0 and "best-of-n mean" in output, output
    best = read_jsonl(rs)
    assert len(best) == len({r["input"] for r in rows}) and all("reward" in r for r in best)
    assert all(r["messages"][-1]["role"] == "assistant" for r in best)
    assert len(read_jsonl(tmp_path / "rs.samples.jsonl")) == 20

    out = tmp_path / "sft"
    rlhfx("sft", "--model", sft_model, "--dataset", rs, "--train_type", "full", "--max_steps", "2", "--batch_size",
          "2", "--output_dir", out)
    assert summary(out)["global_step"] == 2


def test_sample_iter_dpo_then_dpo(sft_model, tmp_path):
    """The whole chain through real `rlhfx` processes."""
    pairs = tmp_path / "pairs.jsonl"
    result = rlhfx("sample", "--model", sft_model, "--dataset", "demo-prompts#24", "--best_of_n", "4",
                   "--max_new_tokens", "16", "--temperature", "1.0", "--reward_func", "demo",
                   "--post_processor", "iter_dpo", "--output_file", pairs)
    assert "whose best and worst rewards tie" in " ".join(result.stderr.split())
    rows = read_jsonl(pairs)
    assert rows and all(set(r) == {"prompt", "chosen", "chosen_reward", "rejected", "rejected_reward"} for r in rows)
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    out = tmp_path / "dpo"
    rlhfx("rlhf", "--rlhf_type", "dpo", "--model", sft_model, "--dataset", pairs, "--train_type", "full",
          "--max_steps", "2", "--batch_size", "2", "--output_dir", out)
    assert summary(out)["global_step"] == 2


def test_sample_rm_task_reads_the_reward_model_at_the_last_token(sft_model, tmp_path, run_cli):
    """A one-label classifier on the SFT'd model (random head) scores each row as a direct forward pass does."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm_dir = tmp_path / "rm"
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(sft_model, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    (rm_dir / "args.json").write_text(json.dumps({"model_type": "tiny", "template": "chatml"}))
    generated = tmp_path / "gen.jsonl"
    rows = [{"input": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "output": out,
             "prompt": [{"role": "user", "content": "Hi"}]} for out in ("The red fox is calm.", "No.")]
    write_jsonl_atomic(generated, rows)
    scored = tmp_path / "scored.jsonl"
    assert run_cli("sample", "--task", "rm", "--reward_model", rm_dir, "--dataset", generated, "--output_file",
                   scored)[0] == 0
    rewards = [r["reward"] for r in read_jsonl(scored)]
    rm.eval()
    for row, reward in zip(rows, rewards):
        ids = tokenizer(row["input"] + row["output"] + "<|im_end|>", return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            expected = rm(**ids).logits[0, 0].item()
        assert reward == pytest.approx(expected, abs=1e-4)
    normalized = tmp_path / "normalized.jsonl"
    assert run_cli("sample", "--task", "rm", "--pretrain", rm_dir, "--dataset", generated, "--normalize_reward",
                   "--output_file", normalized)[0] == 0
    assert [r["reward"] for r in read_jsonl(normalized)] == pytest.approx(z_normalize(rewards))


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model", "--dataset", "demo-prompts#2"], "does not exist"),
    (["--model", "tiny", "--dataset", "demo-prompts#2", "--engine", "tgi"], "invalid choice"),
    (["--model", "tiny", "--dataset", "demo-prompts#2", "--post_processor", "rs"], "needs rewards"),
    (["--model", "tiny"], "No --dataset"),
    (["--model", "tiny", "--dataset", "demo-prompts#2", "--rollout_batch_size", "2", "--iter", "5"], "starts at prompt 10"),
    (["--task", "rm", "--dataset", "EMPTY"], "empty"),
    (["--task", "rm", "--dataset", "EMPTY", "--reward_func", "missing.py"], "does not exist"),
])
def test_bad_sample_inputs_exit_2(argv, message, tmp_path, run_cli):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, output = run_cli("sample", *[str(empty) if a == "EMPTY" else a for a in argv])
    assert code == 2 and message in output, output
    assert "Traceback" not in output


def test_sample_scores_with_a_named_reward_and_online_rl_s_knobs(tmp_path, run_cli):  # noqa: F811
    """`rlhfx sample --reward_func cosine`: the knobs are online RL's flags (the correct curve keeps RLOptions'
    defaults, 1.0 -> 0.5; the wrong one is set to the same), --cosine_max_len left unset is --max_new_tokens; each
    answer scores the cosine of its own length in tokens, by hand. A file without tokens, or a knob without its
    reward, is refused."""
    import math

    generated = tmp_path / "scored.jsonl"
    code, output = run_cli("sample", "--model", "tiny", "--dataset", "demo-math#2", "--best_of_n", "2",
                           "--max_new_tokens", "8", "--reward_func", "cosine", "--cosine_min_len_value_wrong", "1",
                           "--cosine_max_len_value_wrong", "0.5", "--output_file", generated)
    assert code == 0, output
    rows = read_jsonl(generated)
    assert len(rows) == 4
    for row in rows:
        t = len(row["output_ids"])  # 1.0 at length 0, along half a cosine to 0.5 at length 8
        assert 0 < t <= 8 and row["reward"] == pytest.approx(0.5 + 0.5 * (1 + math.cos(math.pi * t / 8)) / 2)

    bare = write_jsonl_atomic(tmp_path / "bare.jsonl", [{k: v for k, v in row.items() if k != "output_ids"}
                                                        for row in rows])
    code, output = run_cli("sample", "--task", "rm", "--dataset", bare, "--reward_func", "cosine",
                           "--output_file", tmp_path / "out.jsonl")
    assert code == 2 and "by its length in tokens, and these samples do not carry their tokens" in output, output
    code, output = run_cli("sample", "--task", "rm", "--dataset", generated, "--reward_func", "accuracy",
                           "--cosine_max_len", "5", "--output_file", tmp_path / "out.jsonl")
    assert code == 2 and "--cosine_max_len configures the cosine reward" in output, output
