"""`rlhfx infer` end to end on the SFT'd tiny model: batch JSONL, interactive chat over stdin, bad inputs."""

import json
import os
import subprocess
import sys

import pytest
from cli_inprocess import run_cli  # noqa: F401
from e2e import RLHFX, rlhfx


def test_batch_infer_writes_jsonl(sft_model, tmp_path, run_cli):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tell me about the red fox.\n\nDescribe the blue owl.\n")
    out = tmp_path / "answers.jsonl"
    result = rlhfx("infer", "--adapters", sft_model, "--input_file", prompts, "--greedy", "--best_of_n", "2",
                   "--max_new_tokens", "24", "--output_file", out)
    assert "samples/s" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [[{"role": "user", "content": "Tell me about the red fox."}],
                                           [{"role": "user", "content": "Describe the blue owl."}]]
    for row in rows:
        assert row["finished"] and row["response"] and row["responses"] == [row["response"]] * 2

    from_dataset = tmp_path / "val.jsonl"
    code, output = run_cli("infer", "--model", sft_model, "--val_dataset", "demo-prompts#3", "--max_new_tokens", "8",
                           "--temperature", "0.7", "--output_path", from_dataset)
    assert code == 0, output
    rows = [json.loads(line) for line in from_dataset.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["label"].split()) == 2 and "responses" not in r for r in rows)


def test_interactive_chat_over_stdin(sft_model):
    result = subprocess.run([*RLHFX, "infer", "--model", str(sft_model), "--greedy", "--max_new_tokens", "24"],
                            input="hello\n/clear\nTell me about the red fox.\n/exit\nnever read\n", capture_output=True,
                            text=True, env=os.environ, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "/clear starts a new conversation" in out and "(conversation cleared)" in out
    assert out.count(">>> ") == 2  # two answers: "never read" after /exit is not answered
    answer = out.split(">>> ")[2].splitlines()[0]
    assert answer.startswith("The red fox") or answer == "I do not know."


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model", "--input_file", "PROMPTS"], "does not exist"),
    (["--input_file", "PROMPTS"], "No model given"),
    (["--model", "tiny", "--engine", "hf"], "invalid choice"),
    (["--model", "tiny", "--input_file", "EMPTY_TXT"], "is empty"),
    (["--model", "tiny", "--input_file", "EMPTY_JSONL"], "is empty"),
    (["--model", "tiny", "--input_file", "missing.jsonl"], "does not exist"),
    (["--model", "tiny", "--input_file", "PROMPTS", "--top_p", "0"], "--top_p"),
    (["--adapters", "/no/such/run"], "--adapters"),
])
def test_bad_infer_inputs_exit_2(argv, message, tmp_path, run_cli):
    files = {"PROMPTS": tmp_path / "p.txt", "EMPTY_TXT": tmp_path / "e.txt", "EMPTY_JSONL": tmp_path / "e.jsonl"}
    files["PROMPTS"].write_text("hello\n")
    files["EMPTY_TXT"].write_text("\n")
    files["EMPTY_JSONL"].write_text("")
    code, output = run_cli("infer", *[str(files.get(a, a)) for a in argv])
    assert code == 2 and message in output, output
    assert "Traceback" not in output


def test_vllm_engine_without_vllm_exits_2(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, whether or not it is installed here
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    for command in ("infer", "sample"):
        code, output = run_cli(command, "--model", "tiny", "--engine", "vllm", "--input_file" if command == "infer"
                               else "--dataset", prompts if command == "infer" else "demo-prompts#2")
        assert code == 2 and "rlhfx[vllm]" in output, output


def test_adapters_folder_gives_base_and_template(tmp_path, run_cli):
    """`--adapters RUN` on a LoRA run folder: base model from the adapter, template from args.json, adapter merged."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from rlhfx.engines import Sampling
    from rlhfx.engines.pt import PtEngine
    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template
    from rlhfx.models import load_causal_lm, load_tokenizer

    base = str(tiny_model_path())
    run = tmp_path / "lora-run"
    torch.manual_seed(1)
    peft_model = get_peft_model(load_causal_lm(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    peft_model.save_pretrained(run)
    (run / "args.json").write_text(json.dumps({"model_type": "tiny", "template": "default", "model_path": base}))
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hi\n")
    out = tmp_path / "out.jsonl"
    code, output = run_cli("infer", "--adapters", run, "--input_file", prompts, "--greedy", "--max_new_tokens", "8",
                           "--output_file", out)
    assert code == 0, output
    tokenizer = load_tokenizer(base)
    merged = PeftModel.from_pretrained(load_causal_lm(base), run).merge_and_unload()
    ids = ChatEncoder(tokenizer, get_template("default")).encode_prompt([{"role": "user", "content": "Hi"}])
    expected = PtEngine(merged, tokenizer).generate([ids], Sampling(max_new_tokens=8, greedy=True))[0][0].text
    assert json.loads(out.read_text())["response"] == expected


def test_a_runs_system_prompt_and_relative_model_follow_it_to_infer_and_export(tmp_path, run_cli, monkeypatch):
    """A LoRA run on `--model ./base --system S`: the folder records the base as an absolute path (so `infer
    --adapters RUN` works from another directory) and S, which infer re-applies and export writes into the merged
    folder's args.json and its tokenizer's chat template."""
    import shutil

    from transformers import AutoTokenizer

    from rlhfx.registry.tiny import tiny_model_path

    system = "You are terse."
    work, other = tmp_path / "work", tmp_path / "other"
    other.mkdir()
    shutil.copytree(tiny_model_path(), work / "base")
    monkeypatch.chdir(work)
    code, output = run_cli("sft", "--model", "./base", "--dataset", "demo-sft#8", "--train_type", "lora",
                           "--max_steps", "1", "--batch_size", "2", "--system", system, "--output_dir", "run")
    assert code == 0, output
    args = json.loads((work / "run" / "args.json").read_text())
    assert args["model_path"] == str(work / "base") and args["system"] == system
    assert json.loads((work / "run" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(work / "base")

    monkeypatch.chdir(other)
    (other / "p.txt").write_text("Hi\n")
    code, output = run_cli("infer", "--adapters", "../work/run", "--input_file", "p.txt", "--max_new_tokens", "2",
                           "--output_file", "a.jsonl")
    assert code == 0, output
    assert json.loads((other / "a.jsonl").read_text())["prompt"][0] == {"role": "system", "content": system}

    code, output = run_cli("export", "--adapters", "../work/run", "--merge_lora", "--output_dir", "merged")
    assert code == 0, output
    assert json.loads((other / "merged" / "args.json").read_text())["system"] == system
    text = AutoTokenizer.from_pretrained(other / "merged").apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    code, output = run_cli("infer", "--model", "merged", "--input_file", "p.txt", "--max_new_tokens", "2",
                           "--output_file", "b.jsonl")
    assert code == 0, output
    assert json.loads((other / "b.jsonl").read_text())["prompt"][0] == {"role": "system", "content": system}
