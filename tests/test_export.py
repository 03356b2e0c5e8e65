"""`rlhfx export --merge_lora`: the merged folder gives the logits of base + adapter (1e-4), for a causal LM,
a LoRA reward model (score head kept) and a binary PRM whose run added a token (embeddings resized); adapters on
tied input/output embeddings, which no merge reproduces, are refused."""

import argparse
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



def merge_gap(model, config) -> float:
    """Max |logit difference| between `model` with a LoRA adapter of `config` (random weights) and that adapter
    merged into it."""
    from peft import get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(model, config).eval()
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape) * 0.1)  # in place: PEFT's tied adapters share storage
        ids = torch.randint(0, model.config.vocab_size, (2, 16))
        return (peft(ids).logits - peft.merge_and_unload()(ids).logits).abs().max().item()


@pytest.mark.parametrize("targets", [["q_proj", "embed_tokens"], ["lm_head"], ["embed_tokens", "lm_head"]])
def test_lora_on_tied_embeddings_is_refused_where_the_run_merges(targets):
    """The tiny model ties its input embeddings and output head: PEFT merges an adapter on either into the one shared
    weight (twice with ensure_weight_tying), so the merged logits differ from the adapter's; a run that merges as it
    trains (weights pushed to vLLM or Ray engines) refuses such targets, one that does not trains them. Untied, the
    same targets merge exactly."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from rlhfx.errors import RlhfxError
    from rlhfx.models.load import lora_config
    from rlhfx.registry.models import resolve_model_type
    from rlhfx.registry.tiny import tiny_model_path

    args = argparse.Namespace(train_type="lora", lora_target_modules=targets, lora_rank=8, lora_alpha=16, lora_dropout=0.0)
    model_type = resolve_model_type("tiny", None, None)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    with pytest.raises(RlhfxError, match="ties its input embeddings and output head") as error:
        lora_config(args, model, model_type, head_trains=True, merges=True)
    assert lora_config(args, model, model_type, head_trains=True).target_modules == set(targets)
    assert f"drop {' and '.join(t for t in targets if t != 'q_proj')} from --lora_target_modules" in error.value.fix
    for tying in (False, True):
        gap = merge_gap(AutoModelForCausalLM.from_pretrained(tiny_model_path()),
                        LoraConfig(target_modules=targets, task_type="CAUSAL_LM", ensure_weight_tying=tying))
        assert gap > 1, f"PEFT now merges tied adapters exactly (ensure_weight_tying={tying}): lift the refusal"
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    assert merge_gap(model, lora_config(args, model, model_type, head_trains=True, merges=True)) < 1e-4


def test_merging_an_adapter_on_tied_embeddings_is_refused(tmp_path):
    """An adapter trained elsewhere (here PEFT's ensure_weight_tying, which adds the embeddings to its targets) on
    the tiny model's tied lm_head: `rlhfx export --merge_lora` and a LoRA run as --model would merge it wrongly."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rlhfx.errors import RlhfxError
    from rlhfx.models.load import merge_adapter
    from rlhfx.registry.tiny import tiny_model_path

    config = LoraConfig(target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM", ensure_weight_tying=True)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path()), config).save_pretrained(tmp_path)
    with pytest.raises(RlhfxError, match="targets embed_tokens, but this model ties its input embeddings") as error:
        merge_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_path()), str(tmp_path))
    assert "load the adapter unmerged" in error.value.fix


def test_an_adapter_on_tied_embeddings_trains_with_a_note_and_export_refuses_to_merge_it(tmp_path, run_cli):
    """SFT with ms-swift's `all-linear embed_tokens` on the tied tiny model: it trains (the adapter is right unmerged)
    and says it cannot be merged; `export --merge_lora` then stops with the reason, leaving no merged folder."""
    run, out = tmp_path / "run", tmp_path / "merged"
    code, text = run_cli("sft", "--dataset", "demo-sft#16", *TRAIN, "--lora_target_modules", "all-linear",
                         "embed_tokens", "--output_dir", run)
    assert code == 0, text
    assert "the adapter on embed_tokens trains, but this model ties its input embeddings" in " ".join(text.split())
    assert "embed_tokens" in json.loads((run / "adapter_config.json").read_text())["target_modules"]
    code, text = run_cli("export", "--adapters", run, "--merge_lora", "--output_dir", out)
    assert code == 2 and "targets embed_tokens, but this model ties" in " ".join(text.split()), text
    assert not out.exists() and not list(tmp_path.glob(".merged.tmp-*"))
