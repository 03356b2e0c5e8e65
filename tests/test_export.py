"""`rlhfx export --merge_lora`: the merged folder gives the logits of base + adapter (1e-4), for a causal LM,
a LoRA reward model (score head kept) and a binary PRM whose run added a token (embeddings resized)."""

import json

import pytest
import torch
from cli_inprocess import run_cli  # noqa: F401 (fixture)

TRAIN = ["--model", "tiny", "--train_type", "lora", "--max_steps", "3", "--batch_size", "8", "--learning_rate", "3e-2",
         "--lora_dropout", "0", "--save_steps", "1000"]
CASES = {  # run flags, transformers class of the merged folder
    "sft": (["sft", "--dataset", "demo-sft#24", "--val_dataset", "demo-sft#4"], "AutoModelForCausalLM"),
    "rm": (["rlhf", "--rlhf_type", "rm", "--dataset", "demo-pref#24", "--val_dataset", "demo-pref#4"],
           "AutoModelForSequenceClassification"),
    "prm": (["rlhf", "--rlhf_type", "prm", "--dataset", "demo-prm#24", "--val_dataset", "demo-prm#4"],
            "AutoModelForTokenClassification"),
}


def adapter_logits(run, class_name, ids):
    """Reference: the base model of the run with its adapter applied, not merged."""
    import transformers
    from peft import PeftModel

    base = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
    kwargs = {} if class_name == "AutoModelForCausalLM" else {"num_labels": 1}
    model = getattr(transformers, class_name).from_pretrained(base, **kwargs)
    size = len(transformers.AutoTokenizer.from_pretrained(run))
    if size > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(size)
    base_logits = model(ids).logits
    model = PeftModel.from_pretrained(model, run).eval()
    return base_logits, model(ids).logits


@pytest.mark.parametrize("name", list(CASES))
def test_merged_logits_equal_base_plus_adapter(name, tmp_path, run_cli):
    import transformers

    argv, class_name = CASES[name]
    run, out = tmp_path / "run", tmp_path / "merged"
    code, text = run_cli(*argv, *TRAIN, "--output_dir", run)
    assert code == 0, text
    code, text = run_cli("export", "--adapters", run, "--merge_lora", "--output_dir", out)
    assert code == 0, text
    assert (out / "config.json").is_file() and not list(tmp_path.glob(".merged.tmp-*"))
    note = json.loads((out / "args.json").read_text())
    assert note["merged_from"] == str(run) and note["template"] == "chatml" and note["rlhf_type"] == name

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text_ids = tokenizer("Tell me about the red fox.<|step|>It is red.<|step|>", return_tensors="pt")["input_ids"]
    merged = getattr(transformers, class_name).from_pretrained(out).eval()
    with torch.no_grad():
        base, expected = adapter_logits(run, class_name, text_ids)
        got = merged(text_ids).logits
    assert (expected - base).abs().max() > 1e-3  # the adapter changed the model: the comparison means something
    assert (got - expected).abs().max() < 1e-4
    if name == "sft":  # a checkpoint folder inside the run finds the run's args.json
        code, text = run_cli("export", "--adapters", run / "checkpoint-3", "--merge_lora")
        assert code == 0, text
        note = json.loads((run / "checkpoint-3-merged" / "args.json").read_text())
        assert (note["template"], note["rlhf_type"]) == ("chatml", "sft")
    if name == "rm":
        assert merged.config.pad_token_id == tokenizer.pad_token_id  # rewards are read at the last non-pad token
    if name == "prm":
        assert "<|step|>" in tokenizer.get_vocab() and merged.get_input_embeddings().weight.shape[0] == len(tokenizer)

