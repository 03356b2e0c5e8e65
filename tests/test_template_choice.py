"""Which chat template a run uses and why: the registry's for known models, the tokenizer's own for the others
(masked by prefix rendering when it has no {% generation %} markers), rlhfx's generic format only for a
tokenizer without a template, and said so in the header, args.json and `rlhfx data check`."""

import json
import re
from types import SimpleNamespace

import pytest
from cli_inprocess import run_cli  # noqa: F401
from conftest import tiny_with_template
from published_templates import QWEN3, SMOLLM2

from rlhfx.registry.models import MODEL_TYPES
from rlhfx.sampling.jsonl import read_jsonl, write_jsonl_atomic
from rlhfx.templates.choice import choose_template

SMOLLM_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def test_choice_order():
    own = SimpleNamespace(chat_template=SMOLLM2)
    none = SimpleNamespace(chat_template=None)
    default, qwen = MODEL_TYPES["default"], MODEL_TYPES["qwen2.5"]
    assert choose_template(own, qwen).name == "qwen2.5"  # the registry knows the model
    assert "registry model type qwen2.5" in choose_template(own, qwen).reason
    unknown = choose_template(own, default)
    assert unknown.template is None and "not in the registry" in unknown.reason and "prefix by prefix" in unknown.reason
    assert choose_template(own, default, explicit_type=True).name == "default"  # --model_type default
    assert choose_template(own, qwen, template="llama3").name == "llama3"
    assert choose_template(own, qwen, use_chat_template=True).template is None
    assert choose_template(own, default, run={"template": "chatml"}).name == "chatml"
    assert choose_template(own, qwen, run={"template": None}).template is None
    generic = choose_template(none, default)
    assert generic.name == "default" and "has no chat_template" in generic.reason


def test_unknown_model_trains_on_its_own_chat_template(chat_model, tmp_path, run_cli):
    """The tiny model renamed, with SmolLM2's template: the run uses that template (header, args.json), and the
    tokens it encodes are apply_chat_template's, with the model's default system prompt."""
    from transformers import AutoTokenizer

    from rlhfx.data.loader import DataConfig, load_data
    from rlhfx.training.encode import make_encoder

    out = tmp_path / "run"
    code, output = run_cli("sft", "--model", chat_model, "--dataset", "demo-sft#8", "--max_steps", "1",
                           "--batch_size", "2", "--output_dir", out)
    assert code == 0, output
    assert "template: the tokenizer chat_template (model not in the registry" in output
    args = json.loads((out / "args.json").read_text())
    assert args["template"] is None and "prefix by prefix" in args["template_reason"]

    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    flags = SimpleNamespace(template=None, use_chat_template=False, model_type=None, train_on="all",
                            enable_thinking=None)
    encoder, choice = make_encoder(flags, tokenizer, MODEL_TYPES["default"])
    rows, _, _ = load_data(DataConfig(datasets=["demo-sft#4"], kind="sft"))
    for row in rows:
        encoded = encoder.encode_sft(row["messages"])
        official = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert encoded["input_ids"] == list(official)
        assert tokenizer.decode(encoded["input_ids"]).startswith(SMOLLM_SYSTEM)
        trained = tokenizer.decode([i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m])
        assert trained == "".join(m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant")

    # infer on the run reads the template back from args.json: the model's own, default system prompt included
    answers = tmp_path / "answers.jsonl"
    (tmp_path / "prompts.txt").write_text("Hello\n")
    code, output = run_cli("infer", "--model", out, "--input_file", tmp_path / "prompts.txt", "--max_new_tokens", "2",
                           "--output_file", answers)
    assert code == 0, output
    assert len(read_jsonl(answers)) == 1


def test_openrlhf_generation_commands_with_apply_chat_template(chat_model, tmp_path, run_cli):
    """docs/inference.md and docs/loops/rs.md: `--input_key context_messages --apply_chat_template` on a model whose
    template has no generation markers (the prompt alone is rendered)."""
    data = write_jsonl_atomic(tmp_path / "prompts.jsonl", [
        {"context_messages": [{"role": "user", "content": "What is 2+2?"}]},
        {"context_messages": [{"role": "user", "content": "Hello!"}]}])
    generated = tmp_path / "generate.jsonl"
    code, output = run_cli("sample", "--task", "generate", "--model", chat_model, "--dataset", data,
                           "--input_key", "context_messages", "--apply_chat_template", "--temperature", "0.9",
                           "--best_of_n", "2", "--max_new_tokens", "4", "--iter", "0", "--rollout_batch_size", "2",
                           "--output_path", generated)
    assert code == 0, output
    rows = read_jsonl(generated)
    assert len(rows) == 4
    assert rows[0]["input"] == SMOLLM_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    answers = tmp_path / "answers.jsonl"
    code, output = run_cli("infer", "--model", chat_model, "--input_file", data, "--input_key", "context_messages",
                           "--apply_chat_template", "--max_new_tokens", "2", "--output_file", answers)
    assert code == 0, output
    assert [r["prompt"] for r in read_jsonl(answers)] == [r["context_messages"] for r in read_jsonl(data)]


def test_data_check_shows_the_first_row_with_trained_tokens_marked(chat_model, run_cli):
    code, output = run_cli("data", "check", "--dataset", "demo-sft#4", "--rlhf_type", "sft", "--model", chat_model)
    assert code == 0, output
    assert "template: the tokenizer chat_template (model not in the registry" in output
    assert "trained tokens between [[ and ]]: <|im_start|>system You are a helpful AI assistant named SmolLM" in output
    assert re.search(r"<\|im_start\|>user [^\[]+<\|im_end\|> <\|im_start\|>assistant \[\[[^\[<]+<\|im_end\|>\]\]", output)
    assert output.count("[[") == 2  # the legend and the one answer


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    """The tiny model with Qwen3's hybrid-thinking template, which reads enable_thinking."""
    return tiny_with_template(tmp_path_factory, "my-thinking-model", QWEN3)


def test_enable_thinking_reaches_a_template_that_reads_it(thinking_model, tmp_path, run_cli):
    """--enable_thinking false: Qwen3's empty think block follows the generation prompt; true: none. In the prompts
    `rlhfx sample` renders and in the tokens training encodes (make_encoder, as the runner builds it)."""
    from transformers import AutoTokenizer

    from rlhfx.training.encode import make_encoder

    inputs = {}
    for value in ("true", "false"):
        generated = tmp_path / f"{value}.jsonl"
        code, output = run_cli("sample", "--model", thinking_model, "--dataset", "demo-prompts#1", "--enable_thinking",
                               value, "--max_new_tokens", "1", "--output_file", generated)
        assert code == 0, output
        assert "does not read enable_thinking" not in output
        inputs[value] = read_jsonl(generated)[0]["input"]
    assert inputs["true"].endswith("<|im_start|>assistant\n")
    assert inputs["false"] == inputs["true"] + "<think>\n\n</think>\n\n"

    tokenizer = AutoTokenizer.from_pretrained(thinking_model)
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    texts = {}
    for value in (None, True, False):
        flags = SimpleNamespace(template=None, use_chat_template=False, model_type=None, train_on="all",
                                enable_thinking=value)
        encoder, choice = make_encoder(flags, tokenizer, MODEL_TYPES["default"])
        assert choice.thinking_note is None
        texts[value] = tokenizer.decode(encoder.encode_prompt(prompt))
    assert texts[None] == texts[True] and texts[False] == texts[True] + "<think>\n\n</think>\n\n"


def test_enable_thinking_with_a_template_without_the_switch_says_so(tmp_path, run_cli):
    """The tiny model's template (the registry's chatml) and a tokenizer template without enable_thinking: a note
    that the flag changes nothing."""
    own = SimpleNamespace(chat_template=SMOLLM2)
    note = choose_template(own, MODEL_TYPES["default"], enable_thinking=False).thinking_note
    assert note == ("--enable_thinking false: the tokenizer chat_template does not read enable_thinking (no thinking "
                    "switch), so it renders the same either way.")
    assert choose_template(own, MODEL_TYPES["default"]).thinking_note is None  # not given: nothing to say
    code, output = run_cli("sample", "--model", "tiny", "--dataset", "demo-prompts#1", "--enable_thinking", "true",
                           "--max_new_tokens", "1", "--output_file", tmp_path / "out.jsonl")
    assert code == 0, output
    assert "note: --enable_thinking true: chatml does not read enable_thinking" in output
