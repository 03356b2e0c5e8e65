"""`rlhfx export --adapters RUN --merge_lora`: a LoRA run as one plain `from_pretrained` folder.

The run folder is resolved as `rlhfx infer --adapters` does (its base model, adapter and template, from
args.json and adapter_config.json). The model class follows the adapter's task type, so a reward model
keeps its score head (SEQ_CLS) and a binary PRM its token head (TOKEN_CLS); tokens the run added (pad,
step placeholder) come with the run's tokenizer, and the base embeddings are resized to it before merging.
The folder is written under a temporary name and renamed when complete; its args.json records where it
came from, so `rlhfx infer --model OUT` and further training pick the same template and system prompt; a
run's --system also becomes the default system message of the exported tokenizer's chat template, so plain
`tokenizer.apply_chat_template` renders what the run trained on.
"""

import json
import shutil
import tempfile
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.redact import redact

SUMMARY = "Merge a LoRA run into its base weights: a from_pretrained folder (--adapters RUN --merge_lora)."
# adapter_config.json task_type -> (transformers auto class, extra from_pretrained arguments)
MODEL_CLASSES = {
    "CAUSAL_LM": ("AutoModelForCausalLM", {}),
    "SEQ_CLS": ("AutoModelForSequenceClassification", {"num_labels": 1}),
    "TOKEN_CLS": ("AutoModelForTokenClassification", {"num_labels": 1}),
}


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if "--help" in argv or "-h" in argv:
        return print_help("export", SUMMARY)
    args = parse_args("export", argv)
    adapter, output = check_flags(args)
    from rlhfx.models import model_spec_from_args, run_args
    from rlhfx.training.runner import quiet_libraries

    spec = model_spec_from_args(args)
    quiet_libraries()
    model, tokenizer = merged_model(spec.path, adapter, args.torch_dtype)
    run = run_args(str(adapter))
    note = {"command": "export", "merged_from": str(adapter), "model_path": spec.path,
            "model_type": spec.model_type.name, "template": spec.template, "rlhf_type": run.get("rlhf_type"),
            "system": run.get("system"), "model_class": type(model).__name__}
    if run.get("system") and tokenizer.chat_template:
        tokenizer.chat_template = with_default_system(tokenizer.chat_template, run["system"])
    write_atomic(output, model, tokenizer, note)
    print(f"rlhfx export: merged {adapter} into {spec.path} ({type(model).__name__}) -> {output}")


def check_flags(args) -> tuple[Path, Path]:
    """The adapter folder and the output folder; every problem is reported before a model loads."""
    if not args.adapters:
        raise RlhfxError("No --adapters given for `rlhfx export`.",
                         "pass the output folder of an rlhfx LoRA run (or one of its checkpoint-* folders).")
    adapter = Path(args.adapters)
    if not adapter.is_dir():
        raise RlhfxError(f"--adapters folder {adapter} does not exist.", "pass the output folder of an rlhfx LoRA run.")
    from rlhfx.models import check_finished_run

    check_finished_run(str(adapter), "--adapters")
    if not (adapter / "adapter_config.json").is_file():
        what = "full weights, which already load with from_pretrained" if (adapter / "config.json").is_file() else \
            "no adapter_config.json"
        raise RlhfxError(f"--adapters {adapter} holds {what}; there is no LoRA adapter to merge.",
                         "pass the output folder of a run trained with --train_type lora.")
    if not args.merge_lora:
        raise RlhfxError("`rlhfx export` was given nothing to do.", "add --merge_lora to merge the adapter.")
    task = adapter_task(adapter)
    if task not in MODEL_CLASSES:
        raise RlhfxError(f"The adapter in {adapter} has task type {task}, which rlhfx export does not know.",
                         f"export adapters of task type {', '.join(MODEL_CLASSES)}.")
    output = Path(args.output_dir) if args.output_dir else adapter.with_name(adapter.name + "-merged")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RlhfxError(f"Output folder {output} already exists and is not empty.", "pick another --output_dir.")
    from rlhfx.training.outputs import check_can_create

    check_can_create(output, "--output_dir")
    return adapter, output


def adapter_task(adapter: Path) -> str:
    """The PEFT task type recorded in the adapter (CAUSAL_LM when it names none)."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RlhfxError(f"{adapter / 'adapter_config.json'} is not valid JSON.",
                         "pass a run folder whose adapter was saved completely.") from None
    return config.get("task_type") or "CAUSAL_LM"


def merged_model(base: str, adapter: Path, dtype: str):
    """The base loaded as the adapter's model class, embeddings resized to the run's tokenizer, adapter merged."""
    import transformers

    from rlhfx.models import load_tokenizer, merge_adapter, torch_dtype

    from safetensors import SafetensorError

    class_name, kwargs = MODEL_CLASSES[adapter_task(adapter)]
    try:
        model = getattr(transformers, class_name).from_pretrained(base, dtype=torch_dtype(dtype), **kwargs)
    except (OSError, ValueError, SafetensorError) as error:
        raise RlhfxError(f"Could not load the base model {base!r} of {adapter} as {class_name}: {error}",
                         "pass the base with --model (a local folder or hub id).") from None
    tokenizer = load_tokenizer(str(adapter))
    model = merge_adapter(model, str(adapter))
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # a reward head is read at the last non-pad token
    return model, tokenizer


def with_default_system(chat_template: str, system: str) -> str:
    """The chat template with the run's --system as the system message of conversations that have none, so
    `tokenizer.apply_chat_template` in plain transformers renders what the run trained on."""
    return ("{%- if not messages or messages[0]['role'] != 'system' %}"
            f"{{%- set messages = [{{'role': 'system', 'content': {json.dumps(system)}}}] + messages %}}"
            "{%- endif %}" + chat_template)


def write_atomic(output: Path, model, tokenizer, note: dict) -> None:
    """Weights, config, tokenizer and args.json into a temporary sibling folder, renamed to `output` at the end."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        note = redact(note)
        (tmp / "args.json").write_text(json.dumps(note, indent=2) + "\n")
        (tmp / "README.md").write_text(
            f"# Merged rlhfx model\n\nLoRA adapter `{note['merged_from']}` merged into `{note['model_path']}` by "
            f"`rlhfx export --merge_lora`. Load it with `transformers.{note['model_class']}.from_pretrained` "
            f"(or `rlhfx infer --model` this folder; template: {note['template'] or 'the tokenizer chat_template'}).\n")
        if output.exists():
            output.rmdir()  # an empty folder the user made beforehand
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
