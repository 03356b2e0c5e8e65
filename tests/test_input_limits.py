"""Inputs that used to pass silently or cost minutes: float labels of pandas/parquet, NaN margins and rewards, rows
far too long to fit, and every algorithm's bare command on its demo data."""

import json

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)

from rlhfx.algos import ALGOS
from rlhfx.data import DataConfig, load_data
from rlhfx.data.report import DropReport


def load(tmp_path, rows, kind):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN is written as the NaN literal, as pandas does
    train, _, report = load_data(DataConfig([str(path)], kind))
    return train, report


def test_kto_float_labels_as_pandas_writes_them(tmp_path):
    rows = [{"prompt": "Q", "completion": c, "label": label} for c, label in
            [("a", 1.0), ("b", 0.0), ("c", "1.0"), ("e", float("nan"))]]
    train, report = load(tmp_path, rows, "unpaired")
    assert [(r["completion"], r["label"]) for r in train] == [("a", True), ("b", False), ("c", True)]
    assert report.counts() == {"not finite": 1}


def test_nan_margin_is_dropped_and_counted(tmp_path):
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b", "margin": m} for m in (1.5, float("nan"), float("inf"))]
    train, report = load(tmp_path, rows, "pairwise")
    assert [r["margin"] for r in train] == [1.5]
    assert report.counts() == {"not finite": 2}


def test_nan_reward_is_refused_by_the_post_processors():
    from rlhfx.errors import RlhfxError
    from rlhfx.sampling.postprocess import post_process

    rows = [{"input": "Q", "output": "a", "reward": 1.0, "index": 0}, {"input": "Q", "output": "b", "reward": float("nan"), "index": 0}]
    with pytest.raises(RlhfxError, match="Row 1 has reward nan, not a finite number"):
        post_process("iter_dpo", rows)


@pytest.fixture(scope="module")
def tiny_encoder():
    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template
    from rlhfx.models import load_tokenizer

    return ChatEncoder(load_tokenizer(str(tiny_model_path())), get_template("chatml"))


class Counting:
    """An encoder wrapper counting the characters it was asked to tokenize."""

    def __init__(self, encoder):
        self.inner, self.tokenizer, self.chars = encoder, encoder.tokenizer, 0

    def encode_prompt(self, messages):
        self.chars += sum(len(m["content"]) for m in messages)
        return self.inner.encode_prompt(messages)

    def encode_completion(self, messages, text):
        self.chars += len(text)
        return self.inner.encode_completion(messages, text)


def test_a_huge_row_is_dropped_without_tokenizing_it(tiny_encoder):
    from rlhfx.training.encode import encode_rows, max_chars_per_token

    per_token = max_chars_per_token(tiny_encoder.tokenizer)
    assert per_token == 4 * max(len(t) for t in tiny_encoder.tokenizer.get_vocab())
    huge = "word " * 1_000_000  # 5 MB
    rows = [{"prompt": [{"role": "user", "content": "Q"}], "chosen": huge, "rejected": "b"},
            {"prompt": [{"role": "user", "content": "Q"}], "chosen": "a", "rejected": "b"}]
    encoder, report = Counting(tiny_encoder), DropReport()
    dataset = encode_rows("pairwise", rows, encoder, 64, report, "train")
    assert len(dataset) == 1 and report.counts() == {"too long": 1}
    assert encoder.chars < 100  # only the short row was tokenized


def test_the_character_rule_never_drops_a_row_that_fits(tiny_encoder):
    """The densest text there is, the longest vocabulary token repeated, at the rule's limit: it is tokenized (and
    is far below --max_length tokens), so the rule only drops rows that could not fit."""
    from rlhfx.training.encode import encode_rows, max_chars_per_token

    longest = max(tiny_encoder.tokenizer.get_vocab(), key=len)
    text = tiny_encoder.tokenizer.convert_tokens_to_string([longest])
    max_length = 64
    limit = max_chars_per_token(tiny_encoder.tokenizer) * max_length
    row = {"prompt": [{"role": "user", "content": "Q"}], "chosen": (text * limit)[:limit - 1], "rejected": "b"}
    encoder, report = Counting(tiny_encoder), DropReport()
    with pytest.raises(Exception, match="longer than --max_length"):  # dropped, but by tokenizing it
        encode_rows("pairwise", [row], encoder, max_length, report, "train")
    assert encoder.chars >= limit - 1


def test_tokenizers_that_may_delete_text_get_no_character_rule():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlhfx.training.encode import max_chars_per_token

    backend = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # drops whitespace; WordPiece maps a long word to one [UNK]
    assert max_chars_per_token(PreTrainedTokenizerFast(tokenizer_object=backend)) is None


# the shortest command of each algorithm on the demo data (its required flags only)
BARE = {"sft": ["sft", "--dataset", "demo-sft"], "prm": ["--dataset", "demo-prm"], "kto": ["--dataset", "demo-kto"],
        "kd": ["--dataset", "demo-sft", "--teacher_model", "tiny"], "gkd": ["--dataset", "demo-sft", "--teacher_model", "tiny"]}
BARE.update({name: ["--dataset", "demo-pref", "--sft_dataset", "demo-sft"] for name in ("alright", "maxright", "mix")})
BARE.update({name: ["--dataset", "demo-prompts", "--reward_func", "demo"] for name in ("ppo", "grpo", "rloo", "reinforce_pp")})


@pytest.mark.parametrize("algo", list(ALGOS))
def test_each_algorithms_bare_command_runs_on_its_demo_data(run_cli, tmp_path, algo):
    argv = BARE.get(algo, ["--dataset", "demo-pref"])
    argv = argv if argv[0] == "sft" else ["rlhf", "--rlhf_type", algo, *argv]
    code, text = run_cli(*argv, "--model", "tiny", "--max_steps", "1", "--output_dir", tmp_path / "out")
    assert code == 0, text
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["global_step"] == 1
