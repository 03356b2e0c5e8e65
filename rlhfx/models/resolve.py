"""From a `--model` / `--adapters` name to the weights, adapter and model type to load (nothing loads here).

`--model` is `tiny` (built locally), `smollm2-135m-instruct` (converted once from a pip package), a local
folder (full weights, an adapter folder whose base is found from it, or the output folder of an earlier rlhfx
run, whose `args.json` says the model type and template), or a hub id. `--adapters RUN` names a run's output
folder: a LoRA adapter is applied to its base (`--model`, else the base recorded in the adapter), a
full-weights run folder is the model itself.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.registry.models import ModelType, resolve_model_type


@dataclass
class ResolvedModel:
    path: str  # full weights: a folder or hub id (an adapter's base)
    adapter: str | None  # a LoRA adapter folder applied on `path`
    model_type: ModelType
    run: dict  # args.json of the rlhfx run being loaded, {} for other models
    display: str  # how to name the model to the user

    @property
    def source(self) -> str:
        """What was asked for: the adapter folder (loaded onto its base and merged), else the weights."""
        return self.adapter or self.path

    @property
    def tokenizer_path(self) -> str:
        """A run that added tokens saved its tokenizer beside the adapter; else the base's."""
        return self.adapter if self.adapter and (Path(self.adapter) / "tokenizer_config.json").exists() else self.path


def resolve_model(model: str | None, model_type: str | None = None, adapters: str | None = None) -> ResolvedModel:
    """The one resolution of --model/--model_type/--adapters that training, engines, rewards and commands share;
    a missing folder, an unfinished run or a gone adapter base is a clear error before anything loads."""
    if adapters is not None and not Path(adapters).is_dir():
        raise RlhfxError(f"--adapters folder {adapters} does not exist.",
                         "pass the output folder of an rlhfx run (it holds adapter_config.json or config.json).")
    if adapters is not None:
        check_finished_run(adapters, "--adapters")
    if adapters is None and model is None and model_type is None:
        raise RlhfxError("No model given.", "pass --model (a hub id, a local folder, or `tiny`) or --adapters RUN_FOLDER.")
    run = run_args(adapters) or run_args(model if model and Path(model).is_dir() else None)

    adapter = None
    if adapters is not None and is_adapter(adapters):
        adapter = adapters
        path = resolve_model_path(model or adapter_base(adapters) or run.get("model_path"), model_type)
    elif adapters is not None:
        path = adapters  # a full-weights run folder
    else:
        path = resolve_model_path(model, model_type)
    if is_adapter(path):  # --model pointing at an adapter folder
        adapter, path = path, resolve_model_path(adapter_base(path), None)
    check_model_source(path)

    recorded = run.get("model_type") or run_args(path).get("model_type")
    if model == "tiny" or Path(path) == tiny_path():
        resolved_type = resolve_model_type("tiny", model_type, None)
    elif model_type is None and recorded:
        resolved_type = resolve_model_type(path, recorded, None)
    else:
        architectures = read_json_file(Path(path) / "config.json").get("architectures")
        resolved_type = resolve_model_type(path, model_type, architectures)
    return ResolvedModel(path=path, adapter=adapter, model_type=resolved_type, run=run or run_args(path),
                         display=str(adapters or model or path))


def policy_model_type(args, path: str) -> ModelType:
    """--model's model type (resolved to `path`) from the flags, an earlier run's args.json or the folder's config."""
    return resolve_model(path, args.model_type).model_type


def resolve_model_path(model: str | None, model_type: str | None) -> str:
    if model is None:
        if model_type:
            return hub_id_for(model_type)
        raise RlhfxError("No model given.", "pass --model (a hub id, a local folder, or `tiny` for the embedded model).")
    if model == "tiny":
        from rlhfx.registry.tiny import tiny_model_path

        return str(tiny_model_path())
    if model == "smollm2-135m-instruct":
        from rlhfx.registry.smollm2 import smollm2_model_path

        return str(smollm2_model_path())
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model  # absolute: run folders work from any directory


def tiny_path() -> Path:
    from rlhfx.registry.tiny import VERSION, cache_root

    return cache_root() / f"tiny-{VERSION}"


def hub_id_for(model_type: str) -> str:
    """ms-swift style `--model_type qwen2_5-7b-instruct` without --model: the registry's checkpoint of that size."""
    entry = resolve_model_type(None, model_type, None)
    size = re.search(r"(\d+(?:[._]\d+)?b)\b", model_type.lower())
    wanted = size.group(1).replace("_", ".") if size else None
    matches = [h for h in entry.hub_ids if wanted is None or f"-{wanted}" in h.lower()]
    if not matches:
        known = ", ".join(entry.hub_ids) or "none"
        raise RlhfxError(f"--model_type {model_type} names no checkpoint rlhfx knows (known for {entry.name}: {known}).",
                         "pass --model with a hub id or a local folder.")
    return matches[0]


def read_json_file(file: Path) -> dict:
    """A model folder's JSON file, {} when absent; a damaged one (a half-written copy) is a clear error."""
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise RlhfxError(f"{file} is damaged: not valid JSON ({error}).",
                         "copy or download the model folder again (or finish the run that writes it).") from None
    if not isinstance(data, dict):
        raise RlhfxError(f"{file} is damaged: it holds a JSON {type(data).__name__}, not an object.",
                         "copy or download the model folder again.")
    return data


def run_args(folder: str | None) -> dict:
    """The args.json of a run folder; a `checkpoint-*` folder inside a run has its run's."""
    if not folder:
        return {}
    file = Path(folder) / "args.json"
    if not file.is_file() and Path(folder).name.startswith("checkpoint-"):
        file = Path(folder).parent / "args.json"
    return read_json_file(file)


def apply_run_system(args) -> None:
    """Without --system, the system prompt recorded by the run being loaded (--adapters, else a --model run or
    export folder), so a model trained with --system answers with it without the flag being repeated."""
    if "system" in args.explicit:
        return
    folder = args.adapters or (args.model if args.model and Path(args.model).is_dir() else None)
    recorded = run_args(folder).get("system")
    if recorded:
        args.values["system"] = recorded


def is_adapter(folder: str) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def adapter_base(path: str) -> str | None:
    """An adapter folder's base model: adapter_config.json's when it is found from here, else the absolute path its
    rlhfx run recorded in args.json; a clear error when the recorded folder is gone (moved or deleted)."""
    if not is_adapter(path):
        return None
    base = read_json_file(Path(path) / "adapter_config.json").get("base_model_name_or_path")
    recorded = read_json_file(Path(path) / "args.json").get("model_path")
    if base and (Path(base).expanduser().is_dir() or not recorded and not _looks_local(base)):
        return base
    if recorded and (Path(recorded).is_dir() or not Path(recorded).is_absolute()):
        return recorded
    if recorded or base:
        raise RlhfxError(f"The base model of adapter {path} is missing: {recorded or base} (recorded when the adapter "
                         "was trained) does not exist any more.",
                         "pass the base model with --model (a folder or hub id), or move it back.")
    return None


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or path.count("/") > 1


def check_model_source(path: str) -> None:
    """A path-like --model that is not a folder is a typo, not a hub id: say so before any download is tried."""
    if _looks_local(path) and not Path(path).expanduser().is_dir():
        raise RlhfxError(f"Model folder {path} does not exist.",
                         "pass an existing folder with config.json, a hub id like Qwen/Qwen2.5-0.5B-Instruct, or `tiny`.")
    check_finished_run(path, "--model")


def check_finished_run(path: str, flag: str) -> None:
    """An rlhfx run folder without summary.json or final weights (killed before its end): say so instead of failing
    to load it."""
    folder = Path(path).expanduser()
    weights = (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()
    if not weights and not (folder / "summary.json").exists() and "rlhf_type" in read_json_file(folder / "args.json"):
        steps = [int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
        hint = f"pass its last checkpoint ({folder / f'checkpoint-{max(steps)}'}) to {flag}, or " if steps else ""
        raise RlhfxError(f"{flag} {path} is an unfinished rlhfx run (no summary.json): its final weights were never "
                         "written.", f"{hint}finish it by rerunning its command with --resume_from_checkpoint latest.")
