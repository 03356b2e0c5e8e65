"""The error table: bad inputs to every command, the words rlhfx's message must contain, and a harness to run them.

tests/test_bad_inputs.py runs every case (exit code 2, the words, no traceback, no complete-looking output);
scripts/gen_troubleshooting.py renders docs/troubleshooting.md from the same cases and the messages they give.
Each case runs in the CLI's own process, in an empty folder holding its `files`, so paths in messages are short.
"""

import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

SFT_ROW = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
PAIR = {"prompt": "Tell me about the red fox.", "chosen": "The red fox is red.", "rejected": "I cannot say."}
KTO_ROW = {"prompt": "Tell me about the red fox.", "completion": "The red fox is red.", "label": True}
PRM_ROW = {"prompt": "2+2?", "steps": ["2+2 is 4."], "labels": [1]}
TINY = ["--model", "tiny"]
OUT = ["--output_dir", "out"]


def jsonl(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # the section of the troubleshooting page
    problem: str  # what the user did, in words
    argv: list[str]
    words: tuple[str, ...]  # the message must contain each (case-insensitive): they name the problem
    files: dict = field(default_factory=dict)  # name -> str or bytes; a name ending in "/" is a folder
    output: str = "out"  # what must not look complete afterwards


CASES = [
    # --- flags and config, any command ---
    Case("misspelled-flag", "flags", "A misspelled flag", ["sft", *TINY, "--lerning_rate", "1e-4"],
         ("unknown flag --lerning_rate", "did you mean --learning_rate")),
    Case("bad-float", "flags", "A flag value of the wrong type", ["rlhf", *TINY, "--beta", "high"],
         ("--beta", "invalid float value")),
    Case("bad-bool", "flags", "A boolean flag given something else", ["sft", "--gradient_checkpointing", "maybe"],
         ("expected true or false",)),
    Case("bad-config-key", "flags", "A misspelled key in --config", ["sft", "--config", "run.yaml"],
         ("unknown key 'lerning_rate'", "did you mean --learning_rate"), {"run.yaml": "lerning_rate: 1e-4\n"}),
    Case("bad-config-yaml", "flags", "A --config file that is not YAML", ["sft", "--config", "run.yaml"],
         ("run.yaml is not valid yaml",), {"run.yaml": "model: [tiny\n"}),
    Case("contradictory-template", "flags", "Two flags that both format the prompt",
         ["sft", *TINY, "--dataset", "demo-sft", "--input_template", "User: {}\nAssistant: ", "--use_chat_template"],
         ("both format the prompt", "choose one")),
    Case("full-with-lora-flags", "flags", "LoRA flags with --train_type full",
         ["sft", *TINY, "--dataset", "demo-sft", "--train_type", "full", "--lora_rank", "16", *OUT],
         ("--train_type full", "--lora_rank configures lora")),
    Case("probs-count", "flags", "--dataset_probs not matching --dataset",
         ["sft", *TINY, "--dataset", "demo-sft", "--dataset_probs", "0.5", "0.5"], ("2 weights for 1 datasets",)),
    Case("split-ratio", "flags", "--split_dataset_ratio of 1 or more",
         ["sft", *TINY, "--dataset", "demo-sft", "--split_dataset_ratio", "1.5", *OUT], ("--split_dataset_ratio is 1.5",)),
    Case("unknown-command", "flags", "A misspelled command", ["sfft"], ("no such command 'sfft'",)),
    # --- data: sft / rlhf ---
    Case("no-dataset", "data", "No --dataset", ["sft", *TINY, *OUT], ("no training data", "--dataset")),
    Case("unknown-dataset", "data", "A misspelled dataset name", ["sft", *TINY, "--dataset", "demo-sftt", *OUT],
         ("'demo-sftt' is not a registered name", "did you mean 'demo-sft'")),
    Case("missing-file", "data", "A data file that does not exist", ["sft", *TINY, "--dataset", "missing.jsonl", *OUT],
         ("'missing.jsonl' does not exist",)),
    Case("folder-as-file", "data", "A folder given as a data file", ["sft", *TINY, "--dataset", "data", *OUT],
         ("'data' is a folder", "json@data"), {"data/": None}),
    Case("empty-file", "data", "An empty JSONL file", ["sft", *TINY, "--dataset", "empty.jsonl", *OUT],
         ("'empty.jsonl' is empty",), {"empty.jsonl": ""}),
    Case("malformed-jsonl", "data", "A JSONL line that is not JSON", ["sft", *TINY, "--dataset", "bad.jsonl", *OUT],
         ("'bad.jsonl' line 2 is not valid json",), {"bad.jsonl": jsonl(SFT_ROW) + '{"messages": [\n'}),
    Case("not-utf8", "data", "A data file that is not UTF-8", ["sft", *TINY, "--dataset", "latin1.jsonl", *OUT],
         ("not utf-8", "line 1", "iconv"), {"latin1.jsonl": b'{"prompt": "caf\xe9", "response": "ok"}\n'}),
    Case("json-scalar", "data", "A JSON file holding no rows", ["sft", *TINY, "--dataset", "five.json", *OUT],
         ("holds a json int, not rows",), {"five.json": "5\n"}),
    Case("unknown-columns", "data", "Rows whose keys rlhfx cannot read",
         ["sft", *TINY, "--dataset", "qa.jsonl", *OUT], ("cannot give sft rows", "question", "--prompt_key"),
         {"qa.jsonl": jsonl({"question": "Hi", "reply": "Hello"})}),
    Case("misspelled-key", "data", "A misspelled column name in the rows",
         ["rlhf", *TINY, "--dataset", "pairs.jsonl", *OUT], ("cannot give pairwise rows", "chosn", "--chosen_key"),
         {"pairs.jsonl": jsonl({"prompt": "Hi", "chosn": "Hello", "rejected": "Go away"})}),
    Case("wrong-data-kind", "data", "SFT data given to DPO", ["rlhf", *TINY, "--dataset", "demo-sft", *OUT],
         ("cannot give pairwise rows", "messages")),
    Case("empty-completion", "data", "Zero-length answers", ["sft", *TINY, "--dataset", "empty_answers.jsonl", *OUT],
         ("every row", "dropped", "'empty'", "the answer is empty"),
         {"empty_answers.jsonl": jsonl({"prompt": "Hi", "response": ""}, {"prompt": "Yo", "response": "  "})}),
    Case("chosen-equals-rejected", "data", "chosen == rejected in every pair",
         ["rlhf", *TINY, "--dataset", "same.jsonl", *OUT], ("every row", "'chosen == rejected'"),
         {"same.jsonl": jsonl({**PAIR, "rejected": PAIR["chosen"]})}),
    Case("kto-label-type", "data", "KTO labels that are not booleans",
         ["rlhf", "--rlhf_type", "kto", *TINY, "--dataset", "kto.jsonl", *OUT], ("'wrong type'", "'label' is 'good'", "true/false"),
         {"kto.jsonl": jsonl({**KTO_ROW, "label": "good"})}),
    Case("prm-label-count", "data", "PRM rows with a label count unlike the step count",
         ["rlhf", "--rlhf_type", "prm", *TINY, "--dataset", "prm.jsonl", *OUT], ("steps/labels mismatch", "2 labels", "1 steps"),
         {"prm.jsonl": jsonl({**PRM_ROW, "labels": [1, 0]})}),
    Case("too-long", "data", "Every prompt longer than --max_length",
         ["sft", *TINY, "--dataset", "demo-sft#8", "--max_length", "8", *OUT], ("longer than --max_length 8", "raise --max_length")),
    Case("max-samples-zero", "data", "--max_samples 0", ["sft", *TINY, "--dataset", "demo-sft", "--max_samples", "0", *OUT],
         ("--max_samples is 0",)),
    # --- models and algorithms ---
    Case("missing-model-folder", "models", "A model folder that does not exist",
         ["sft", "--model", "./models/my-model", "--dataset", "demo-sft", *OUT], ("./models/my-model does not exist",)),
    Case("unknown-model-type", "models", "A misspelled --model_type",
         ["sft", *TINY, "--model_type", "lama3", "--dataset", "demo-sft", *OUT], ("lama3",)),
    Case("unknown-template", "models", "A misspelled --template",
         ["sft", *TINY, "--template", "chatmll", "--dataset", "demo-sft#8", *OUT], ("unknown chat template 'chatmll'", "did you mean 'chatml'")),
    Case("unknown-rlhf-type", "models", "A misspelled --rlhf_type", ["rlhf", "--rlhf_type", "dpx", *TINY], ("did you mean dpo",)),
    Case("rl-no-reward-source", "models", "Online RL without a reward source",
         ["rlhf", "--rlhf_type", "ppo", *TINY, "--dataset", "demo-prompts#8", *OUT], ("needs a reward source",)),
    Case("rl-group-one-sample", "models", "A group advantage estimator with one sample per prompt",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_func", "demo",
          "--n_samples_per_prompt", "1", *OUT], ("--n_samples_per_prompt is 1",)),
    Case("flag-of-other-algo", "models", "A flag of another algorithm",
         ["rlhf", "--rlhf_type", "kto", *TINY, "--dataset", "demo-kto", "--rpo_alpha", "0.1"], ("--rpo_alpha does not apply to --rlhf_type kto",)),
    Case("label-smoothing-range", "models", "cDPO label smoothing of 0.5 or more",
         ["rlhf", *TINY, "--dataset", "demo-pref#16", "--label_smoothing", "0.7", *OUT], ("--label_smoothing must be in [0, 0.5)",)),
    Case("lora-rank-zero", "models", "--lora_rank 0", ["sft", *TINY, "--dataset", "demo-sft#8", "--lora_rank", "0", *OUT],
         ("--lora_rank is 0",)),
    Case("lora-on-output-head", "models", "A LoRA adapter on the output head where TRL's loss reads its weight (gkd)",
         ["rlhf", "--rlhf_type", "gkd", *TINY, "--teacher_model", "tiny", "--dataset", "demo-sft#8", "--train_type", "lora",
          "--lora_target_modules", "all-linear", "lm_head", *OUT], ("output head lm_head", "drop lm_head")),
    Case("batch-size-zero", "models", "--batch_size 0", ["sft", *TINY, "--dataset", "demo-sft#8", "--batch_size", "0", *OUT],
         ("--batch_size is 0",)),
    Case("negative-lr", "models", "A negative learning rate",
         ["sft", *TINY, "--dataset", "demo-sft#8", "--learning_rate", "-1e-4", *OUT], ("--learning_rate is -0.0001",)),
    Case("save-steps-zero", "models", "--save_steps 0", ["sft", *TINY, "--dataset", "demo-sft#8", "--save_steps", "0", *OUT],
         ("--save_steps is 0", "-1")),
    # --- outputs ---
    Case("output-under-file", "outputs", "An --output_dir that cannot be created",
         ["sft", *TINY, "--dataset", "demo-sft#8", "--output_dir", "notes.txt/run"], ("cannot create output folder notes.txt/run",),
         {"notes.txt": "a file, not a folder\n"}, output="notes.txt/run"),
    # --- infer and sample ---
    Case("infer-missing-adapters", "infer / sample", "--adapters folder that does not exist",
         ["infer", "--adapters", "output/run1", "--input_file", "p.txt"], ("--adapters folder output/run1 does not exist",),
         {"p.txt": "Hi\n"}),
    Case("infer-empty-prompts", "infer / sample", "An empty prompt file",
         ["infer", *TINY, "--input_file", "p.txt", "--output_file", "out"], ("--input_file p.txt is empty",), {"p.txt": "\n\n"}),
    Case("infer-temperature", "infer / sample", "A negative --temperature",
         ["infer", *TINY, "--temperature", "-1", "--input_file", "p.txt", "--output_file", "out"], ("--temperature is -1.0",),
         {"p.txt": "Hi\n"}),
    Case("infer-not-utf8", "infer / sample", "A prompt file that is not UTF-8",
         ["infer", *TINY, "--input_file", "p.jsonl", "--output_file", "out"], ("not utf-8",), {"p.jsonl": b'{"prompt": "\xff"}\n'}),
    Case("infer-output-under-file", "infer / sample", "An --output_file that cannot be created",
         ["infer", *TINY, "--input_file", "p.txt", "--output_file", "notes.txt/answers.jsonl"],
         ("cannot create notes.txt/answers.jsonl", "notes.txt is not a folder"), {"p.txt": "Hi\n", "notes.txt": "x"},
         output="notes.txt/answers.jsonl"),
    Case("sample-output-under-file", "infer / sample", "A `sample` --output_file that cannot be created",
         ["sample", *TINY, "--dataset", "demo-prompts#2", "--reward_func", "demo", "--output_file", "notes.txt/s.jsonl"],
         ("cannot create notes.txt/s.jsonl", "not a folder"), {"notes.txt": "x"}, output="notes.txt/s.jsonl"),
    Case("sample-no-dataset", "infer / sample", "`sample` without prompts", ["sample", *TINY, "--output_file", "out"],
         ("no --dataset given",)),
    Case("sample-two-rewards", "infer / sample", "Two reward sources",
         ["sample", *TINY, "--dataset", "demo-prompts", "--reward_model", "rm", "--reward_func", "demo", "--output_file", "out"],
         ("--reward_model and --reward_func both give rewards",)),
    Case("sample-rm-bad-rows", "infer / sample", "`sample --task rm` on a file without input/output",
         ["sample", "--task", "rm", "--dataset", "gen.jsonl", "--reward_func", "demo", "--output_file", "out"],
         ("has no string 'input' and 'output'",), {"gen.jsonl": jsonl({"prompt": "Hi", "response": "Hello"})}),
    Case("sample-postprocess-no-reward", "infer / sample", "A post-processor without rewards",
         ["sample", *TINY, "--dataset", "demo-prompts", "--post_processor", "rs", "--output_file", "out"], ("needs rewards",)),
    # --- export ---
    Case("export-missing", "export", "--adapters folder that does not exist",
         ["export", "--adapters", "output/run1", "--merge_lora"], ("--adapters folder output/run1 does not exist",),
         output="output/run1-merged"),
    Case("export-full-weights", "export", "Exporting a full-weights run",
         ["export", "--adapters", "run", "--merge_lora", *OUT], ("holds full weights", "no lora adapter"), {"run/config.json": "{}"}),
    Case("export-broken-adapter", "export", "A damaged adapter_config.json",
         ["export", "--adapters", "run", "--merge_lora", *OUT], ("run/adapter_config.json is not valid json",),
         {"run/adapter_config.json": '{"task_type": '}),
    Case("export-no-merge", "export", "Export without --merge_lora",
         ["export", "--adapters", "run", *OUT], ("nothing to do", "--merge_lora"), {"run/adapter_config.json": "{}"}),
    Case("export-output-exists", "export", "An --output_dir that is not empty",
         ["export", "--adapters", "run", "--merge_lora", "--output_dir", "taken"], ("taken already exists",),
         {"run/adapter_config.json": "{}", "taken/model.safetensors": ""}, output="none"),
    Case("export-output-under-file", "export", "An export --output_dir that cannot be created",
         ["export", "--adapters", "run", "--merge_lora", "--output_dir", "notes.txt/merged"],
         ("cannot create notes.txt/merged", "not a folder"), {"run/adapter_config.json": "{}", "notes.txt": "x"},
         output="notes.txt/merged"),
    # --- data check ---
    Case("data-check-no-kind", "data check", "`data check` without --rlhf_type or --kind",
         ["data", "check", "--dataset", "demo-pref"], ("needs to know what the data is for", "--kind")),
    Case("data-check-misspelled", "data check", "A misspelled `data` subcommand",
         ["data", "chek", "--dataset", "demo-pref"], ("unknown subcommand `rlhfx data chek`",)),
    Case("data-check-kto-labels", "data check", "`data check` on KTO rows with bad labels",
         ["data", "check", "--kind", "unpaired", "--dataset", "kto.jsonl"], ("every row", "'wrong type'"),
         {"kto.jsonl": jsonl({**KTO_ROW, "label": "maybe"})}),
    Case("data-check-too-long", "data check", "`data check` where every row is too long",
         ["data", "check", "--kind", "pairwise", *TINY, "--dataset", "demo-pref#8", "--max_length", "4"],
         ("every row is longer than --max_length 4",)),
    Case("rl-greedy-group", "models", "Greedy rollouts (--temperature 0) with a group advantage estimator",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_func", "demo",
          "--temperature", "0", *OUT], ("--temperature 0.0", "every advantage is 0")),
    Case("rl-dpo-loss-type", "models", "A DPO --loss_type for online RL",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_func", "demo",
          "--loss_type", "ipo", *OUT], ("--loss_type ipo is a DPO loss", "--loss_agg_mode")),
    Case("rl-is-correction-pt", "models", "vLLM rollout correction without vLLM rollouts",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_func", "demo",
          "--enable_vllm_is_correction", *OUT], ("--enable_vllm_is_correction", "--engine vllm")),
    Case("rl-chord-without-dataset", "models", "A CHORD knob without CHORD's expert data",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_func", "demo",
          "--chord_mu_peak", "0.9", *OUT], ("--chord_mu_peak", "no --chord_sft_dataset", "add --chord_sft_dataset")),
    Case("rl-chord-without-schedule", "models", "CHORD's expert data without its batch size and mu schedule",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_func", "demo",
          "--chord_sft_dataset", "demo-sft", "--chord_mu_peak", "0.9", *OUT],
         ("--chord_sft_per_device_train_batch_size", "--chord_mu_valley", "no defaults")),
    # --- ms-swift's flags (issue 20) ---
    Case("vllm-mode-server", "models", "--vllm_mode server with no `rlhfx rollout` server answering",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_funcs", "demo", "--use_vllm", "true", "--vllm_mode", "server",
          "--vllm_server_base_url", "http://127.0.0.1:9", "--vllm_server_timeout", "1", *OUT],
         ("no rollout server answers at http://127.0.0.1:9", "rlhfx rollout --model")),
    Case("vllm-server-flag-without-server", "models", "A rollout-server flag without --vllm_mode server",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_funcs", "demo", "--vllm_server_port", "8001", *OUT],
         ("--vllm_server_port configures the rollout server", "--vllm_mode server")),
    Case("vllm-colocate-flag-with-server", "models", "An in-process vLLM flag with --vllm_mode server",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_funcs", "demo", "--use_vllm", "true", "--vllm_mode", "server",
          "--vllm_tensor_parallel_size", "2", *OUT], ("--vllm_tensor_parallel_size configures the in-process", "pass --tp_size to `rlhfx rollout`")),
    Case("rollout-dp-size", "models", "`rlhfx rollout --dp_size 2`", ["rollout", *TINY, "--dp_size", "2"], ("--dp_size 2", "one engine")),
    Case("vllm-mode-without-use-vllm", "models", "--vllm_mode without --use_vllm true",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_funcs", "demo", "--vllm_mode", "colocate", *OUT], ("without --use_vllm true",)),
    Case("sleep-level-without-vllm", "models", "--sleep_level (a vLLM setting) with the pt rollout engine",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_funcs", "demo", "--sleep_level", "1", *OUT], ("--sleep_level configures vllm rollouts", "--use_vllm true")),
    Case("system-file-missing", "models", "--system naming a .txt file that does not exist (ms-swift reads such a file)",
         ["sft", *TINY, "--dataset", "demo-sft#8", "--system", "prompt.txt", *OUT], ("prompt.txt", "does not exist")),
    Case("unknown-reward-func", "models", "A --reward_funcs name that is neither built in nor registered",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-prompts#8", "--reward_funcs", "accuracyy", *OUT], ("accuracyy", "did you mean 'accuracy'")),
    Case("max-turns-without-scheduler", "models", "--max_turns without a --multi_turn_scheduler",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-math#8", "--reward_funcs", "accuracy", "--max_turns", "2", *OUT],
         ("--max_turns configures multi-turn rollouts", "add --multi_turn_scheduler")),
    Case("unknown-multi-turn-scheduler", "models", "A --multi_turn_scheduler name that is neither built in nor registered",
         ["rlhf", "--rlhf_type", "grpo", *TINY, "--dataset", "demo-math#8", "--reward_funcs", "accuracy",
          "--multi_turn_scheduler", "math_tip", *OUT], ("'math_tip' is not a known scheduler", "did you mean 'math_tip_trick'",
                                                          "--external_plugins", "multi_turns['name'] = myscheduler")),
    Case("multi-turn-with-critic", "models", "--multi_turn_scheduler with PPO's critic (gae)",
         ["rlhf", "--rlhf_type", "ppo", *TINY, "--dataset", "demo-math#8", "--reward_funcs", "accuracy",
          "--multi_turn_scheduler", "math_tip_trick", *OUT], ("--multi_turn_scheduler with --advantage_estimator gae", "--rlhf_type grpo")),
    # --- issue 15: protected folders, limits, broken folders, reward functions ---
    Case("output-is-model", "outputs", "--output_dir is the --model folder",
         ["rlhf", "--model", "base", "--dataset", "demo-pref", "--output_dir", "base"],
         ("--output_dir base is the model folder ./base", "overwrite the model's weights", "--overwrite_output_dir"),
         {"base/config.json": json.dumps({"architectures": ["LlamaForCausalLM"]})}),
    Case("output-not-a-run", "outputs", "--output_dir holds files that are not an rlhfx run",
         ["sft", *TINY, "--dataset", "demo-sft", *OUT],
         ("already holds files that are not an rlhfx run (README.md, notes.txt)", "--overwrite_output_dir"),
         {"out/README.md": "my notes\n", "out/notes.txt": "x\n"}),
    Case("max-steps-zero", "flags", "--max_steps 0", ["sft", *TINY, "--dataset", "demo-sft", "--max_steps", "0", *OUT],
         ("--max_steps is 0", "-1")),
    Case("max-steps-negative", "flags", "--max_steps below -1",
         ["sft", *TINY, "--dataset", "demo-sft", "--max_steps", "-5", *OUT], ("--max_steps is -5",)),
    Case("config-float-for-int", "flags", "A fraction in --config for a whole-number flag",
         ["sft", "--config", "run.yaml"], ("--max_steps expects an int, got 2.5",), {"run.yaml": "max_steps: 2.5\n"}),
    Case("config-bad-bool", "flags", "A --config boolean that is neither true nor false",
         ["sft", "--config", "run.yaml"], ("--gradient_checkpointing", "expected true or false, got 'maybe'"),
         {"run.yaml": "gradient_checkpointing: maybe\n"}),
    Case("negative-beta", "flags", "A negative --beta", ["rlhf", *TINY, "--dataset", "demo-pref", "--beta", "-1", *OUT],
         ("--beta is -1.0", "must be above 0")),
    Case("model-broken-config", "data", "A --model folder whose config.json is damaged",
         ["sft", "--model", "m", "--dataset", "demo-sft", *OUT], ("m/config.json is damaged: not valid json",),
         {"m/config.json": '{"architectures": ['}),
    Case("model-unfinished-run", "data", "An unfinished run folder as --model",
         ["sft", "--model", "run", "--dataset", "demo-sft", *OUT],
         ("--model ./run is an unfinished rlhfx run (no summary.json)", "run/checkpoint-2"),
         {"run/args.json": json.dumps({"rlhf_type": "sft", "model_type": "tiny"}), "run/checkpoint-2/": None}),
    Case("export-unfinished-run", "export", "An unfinished run folder as --adapters",
         ["export", "--adapters", "run", "--merge_lora"], ("--adapters run is an unfinished rlhfx run",),
         {"run/args.json": json.dumps({"rlhf_type": "sft"})}),
    Case("reward-func-raises", "infer / sample", "A reward function that raises",
         ["sample", "--task", "rm", "--dataset", "gen.jsonl", "--reward_func", "bad.py", "--output_file", "out"],
         ("reward function reward_func in bad.py raised KeyError: 'score' (line 2 of",),
         {"gen.jsonl": jsonl({"input": "Hi", "output": "Hello"}),
          "bad.py": "def reward_func(queries, prompts, labels):\n    return [{}['score'] for q in queries]\n"}),
    Case("reward-func-hangs", "infer / sample", "A reward function that never returns",
         ["sample", "--task", "rm", "--dataset", "gen.jsonl", "--reward_func", "slow.py", "--reward_func_timeout", "1",
          "--output_file", "out"], ("did not return within 1 seconds", "--reward_func_timeout"),
         {"gen.jsonl": jsonl({"input": "Hi", "output": "Hello"}),
          "slow.py": "import time\ndef reward_func(queries, prompts, labels):\n    time.sleep(30)\n"}),
    Case("kto-scores-without-threshold", "data check", "KTO on rows scored 1-10 (UltraFeedback style) without a threshold",
         ["data", "check", "--rlhf_type", "kto", "--dataset", "uf.jsonl", "--response_key", "response", "--label_key",
          "score"], ("'score' holds scores", "--desirable_threshold"),
         {"uf.jsonl": jsonl({"instruction": "Q", "response": "A", "score": 8})}),
    Case("gkd-no-teacher", "flags", "Distillation (kd, gkd) without --teacher_model",
         ["rlhf", "--rlhf_type", "gkd", *TINY, "--dataset", "demo-sft", *OUT], ("--rlhf_type gkd needs a teacher", "--teacher_model")),
]


def make_files(folder: Path, files: dict) -> None:
    for name, content in files.items():
        path = folder / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def run_case(case: Case, folder: Path) -> tuple[int, str]:
    """Run `rlhfx ARGV` in this process with `folder` as the working directory: (exit code, output with whitespace
    runs made one space). Anything but SystemExit propagates (a crash, not a message)."""
    from rlhfx.cli import main

    make_files(folder, case.files)
    out, cwd, argv, columns = io.StringIO(), os.getcwd(), sys.argv, os.environ.get("COLUMNS")
    os.chdir(folder)
    sys.argv = ["rlhfx", *case.argv]
    os.environ["COLUMNS"] = "1000"  # rich would fold long words at 80 columns
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    finally:
        os.chdir(cwd)
        sys.argv = argv
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    return code, " ".join(out.getvalue().replace(str(folder), ".").split())


def error_message(text: str) -> str:
    """The `error: ... fix: ...` paragraph of a run's output."""
    return text[text.find("error:"):] if "error:" in text else text
