"""Multi-turn rollouts (--multi_turn_scheduler, --max_turns): the turn loop on a scripted engine, the loss mask on
exactly the model's tokens, and one GRPO step with math_tip_trick on the SFT'd tiny model."""

import json

import pytest
import torch
from e2e import metrics, rlhfx

from rlhfx.algos.rl.multi_turn import MathTipTrick, MultiTurnRollout, MultiTurnScheduler
from rlhfx.engines import Completion, Sampling
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import TEMPLATES

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


class ScriptedEngine:
    """Answers call k with the k-th text of the script (ending on <|im_end|>), n times per prompt; keeps the prompts."""

    def __init__(self, tokenizer, script: list[str]):
        self.tokenizer, self.script, self.prompts = tokenizer, script, []
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompts, sampling):
        self.prompts.append(prompts)
        assert len(self.prompts) <= len(self.script), "more turns than the script has"
        text = self.script[len(self.prompts) - 1]
        return [[Completion(text, self.ids(text) + [self.end], True)] * sampling.n for _ in prompts]


def rollout(tokenizer, scheduler, script, max_turns, n=1):
    encoder = ChatEncoder(tokenizer, TEMPLATES["chatml"])
    engine = ScriptedEngine(tokenizer, script)
    row = {"prompt_ids": encoder.encode_prompt(PROMPT), "prompt_messages": json.dumps(PROMPT), "label": "5"}
    driver = MultiTurnRollout(scheduler, encoder, [engine.end], max_turns, total_limit=False)
    return engine, row, driver(engine, [row], Sampling(n=n, max_new_tokens=32))


def test_math_tip_trick_cuts_the_wrong_answer_appends_the_tip_and_masks_only_it(chatml_tokenizer):
    """Turn 1 answers 6 (wrong): its text from </think> on is cut, the tip appended to the assistant's message, and
    turn 2 continues that message; the tip in it already ends the conversation. Hand-checked token by token."""
    scheduler = MathTipTrick(None, chatml_tokenizer, max_turns=3)
    first, second = "<think>2 + 3</think><answer>6</answer>", " 2 + 3 = 5 <answer>5</answer>"
    engine, row, (samples, prompt_ids, response_ids, finished, _, masks) = rollout(
        chatml_tokenizer, scheduler, [first, second], max_turns=3, n=2)
    kept = engine.ids("<think>2 + 3")
    tip = engine.ids(MathTipTrick.tip)
    assert kept == engine.ids(first)[: len(kept)]  # the model's own tokens up to the cut
    assert engine.prompts[1] == [row["prompt_ids"] + kept + tip] * 2  # turn 2 continues the whole conversation
    assert len(engine.prompts) == 2
    turn2 = engine.ids(second) + [engine.end]
    assert response_ids == [kept + tip + turn2] * 2
    assert masks == [[1] * len(kept) + [0] * len(tip) + [1] * len(turn2)] * 2
    assert prompt_ids == [row["prompt_ids"]] * 2 and finished == [True, True]
    assert samples[0].response == "<think>2 + 3" + MathTipTrick.tip + second  # the rewards see the final answer
    assert samples[0].messages == PROMPT and samples[0].label == "5"


def test_math_tip_trick_stops_after_a_right_answer(chatml_tokenizer):
    engine, _, (samples, _, response_ids, _, _, masks) = rollout(
        chatml_tokenizer, MathTipTrick(None, chatml_tokenizer), ["<think>2 + 3</think><answer>5</answer>"], None)
    assert len(engine.prompts) == 1 and masks[0] == [1] * len(response_ids[0])


class CheckAgain(MultiTurnScheduler):
    """Never finishes by itself: only --max_turns ends it."""

    def check_finished(self, trajectory, completion, turn):
        return False

    def step(self, trajectory, completion, turn):
        trajectory.messages.append({"role": "user", "content": "Check."})


def test_a_user_message_joins_the_turns_with_the_template_and_max_turns_ends_the_conversation(chatml_tokenizer):
    """Between turns: the template's end of line, the user's message and the assistant header, all masked 0 (the
    model's own <|im_end|> stays trained); the third turn is the last of --max_turns 3 though the scheduler goes on."""
    engine, row, (samples, _, response_ids, _, _, masks) = rollout(
        chatml_tokenizer, CheckAgain(None, chatml_tokenizer, max_turns=3), ["4", "5", "five"], max_turns=3)
    assert len(engine.prompts) == 3
    glue = engine.ids("\n<|im_start|>user\nCheck.<|im_end|>\n<|im_start|>assistant\n")
    turns = [engine.ids(text) + [engine.end] for text in ("4", "5", "five")]
    assert response_ids[0] == turns[0] + glue + turns[1] + glue + turns[2]
    assert masks[0] == [1] * len(turns[0]) + [0] * len(glue) + [1] * len(turns[1]) + [0] * len(glue) + [1] * len(turns[2])
    assert engine.prompts[2] == [row["prompt_ids"] + response_ids[0][: -len(turns[2])]]
    assert samples[0].response == "five" and samples[0].token_ids == turns[2]  # the final answer, scored
    assert [m["content"] for m in samples[0].messages] == ["What is 2 + 3?", "4", "Check.", "5", "Check."]


def test_a_total_length_limit_cuts_the_turn_that_reaches_it(chatml_tokenizer):
    """--completion_length_limit_scope total: turn 2 gets only what turn 1 and the glue left of the limit."""
    encoder = ChatEncoder(chatml_tokenizer, TEMPLATES["chatml"])
    engine = ScriptedEngine(chatml_tokenizer, ["4", "five five five", "six"])
    row = {"prompt_ids": encoder.encode_prompt(PROMPT), "prompt_messages": json.dumps(PROMPT), "label": "5"}
    first, glue = engine.ids("4") + [engine.end], engine.ids("\n<|im_start|>user\nCheck.<|im_end|>\n<|im_start|>assistant\n")
    limit = len(first) + len(glue) + 2
    driver = MultiTurnRollout(CheckAgain(None, chatml_tokenizer), encoder, [engine.end], None, total_limit=True)
    _, _, response_ids, finished, _, masks = driver(engine, [row], Sampling(max_new_tokens=limit))
    assert len(engine.prompts) == 2
    assert response_ids[0] == first + glue + engine.ids("five five five")[:2] and finished == [False]
    assert masks[0] == [1] * len(first) + [0] * len(glue) + [1, 1]


def test_the_rollout_batch_trains_only_where_the_loss_mask_is_1():
    """A conversation's inserted tokens (mask 0) get no advantage; a one-turn sample (mask None) trains every token."""
    from test_rl_trainer_steps import rollout_trainer

    from rlhfx.rewards.sources import Sample

    stage = rollout_trainer([])
    sample = Sample([], "p", "r")
    group = [(sample, [1, 2], [5, 6, 7, 8], True, 1.0, 0.0, [0.0] * 4, [1, 0, 0, 1]),
             (sample, [3], [9, 9], True, 0.0, 0.0, [0.0] * 2, None)]
    batch, _ = stage.experience([group], 0)
    assert batch["mask"].tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]
    assert (batch["advantages"] != 0).tolist() == [[True, False, False, True], [True, True, False, False]]


def test_one_grpo_step_with_math_tip_trick_trains_on_conversations_holding_the_tip(sft_model, tmp_path):
    """The SFT'd tiny model answers math prompts with demo-task text (no number, so wrong): every conversation gets
    the tip and a second turn; the step trains and logs the conversations."""
    out = tmp_path / "out"
    rlhfx("rlhf", "--rlhf_type", "grpo", "--model", sft_model, "--dataset", "demo-math#8", "--val_dataset",
          "demo-math#2", "--reward_funcs", "accuracy", "--multi_turn_scheduler", "math_tip_trick", "--max_turns", "2",
          "--max_steps", "1", "--rollout_batch_size", "2", "--n_samples_per_prompt", "2", "--micro_rollout_batch_size",
          "4", "--generate_max_len", "24", "--log_completions", "true", "--output_dir", out)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    tipped = [row["completion"].split(MathTipTrick.tip) for row in rows if MathTipTrick.tip in row["completion"]]
    assert tipped and all(first and second.strip() for first, second in tipped), rows  # a first turn, then a second
    step = next(row for row in metrics(out) if "policy_loss" in row)
    assert torch.isfinite(torch.tensor(step["policy_loss"])) and step["response_length"] > 0


PLUGIN = """from rlhfx.algos.rl.multi_turn import MultiTurnScheduler, multi_turns


class Again(MultiTurnScheduler):
    def check_finished(self, trajectory, completion, turn):
        return False  # only --max_turns ends it

    def step(self, trajectory, completion, turn):
        trajectory.messages.append({"role": "user", "content": "Again."})


multi_turns["again"] = Again
"""


def test_a_plugin_scheduler_runs_every_turn_through_the_rollout_server(tmp_path):
    """--vllm_mode server: the trainer runs the scheduler (registered by --external_plugins) and asks the server for
    each turn: per generation round one push, the push check, then turns 1 and 2 (--max_turns 2)."""
    from test_rollout_server import Served, _info, _tiny

    engine, model, tokenizer = _tiny()
    server = Served(engine, _info(model, tokenizer))
    (tmp_path / "plugin.py").write_text(PLUGIN)
    out = tmp_path / "run"
    try:
        rlhfx("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#16", "--val_dataset",
              "demo-prompts#2", "--reward_func", "demo", "--train_type", "full", "--use_vllm", "true", "--vllm_mode",
              "server", "--vllm_server_base_url", server.url, "--external_plugins", tmp_path / "plugin.py",
              "--multi_turn_scheduler", "again", "--max_turns", "2", "--max_steps", "1", "--rollout_batch_size", "2",
              "--n_samples_per_prompt", "2", "--generate_max_len", "4", "--log_completions", "true",
              "--output_dir", out)
    finally:
        server.close()
    assert server.requests == (["/update_weights"] + ["/generate"] * 3) * 3  # evaluation, step 1, evaluation
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(row["prompt"].endswith("Again.<|im_end|>\n<|im_start|>assistant\n") for row in rows)
