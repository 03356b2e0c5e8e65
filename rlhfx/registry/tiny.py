"""The embedded tiny model: `--model tiny` works with no hub and no download.

Built once, deterministically, into the user's cache dir (`$RLHFX_CACHE` or `~/.cache/rlhfx`):
a byte-level BPE tokenizer trained on the bundled demo texts, a ChatML chat template with
`{% generation %}` markers, and a randomly initialised Llama-architecture model (head_dim 32,
which vLLM's CPU attention accepts). The folder loads with AutoTokenizer/AutoModelForCausalLM.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

from rlhfx.registry.demo_task import DATA_DIR

VERSION = "v1"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MODEL_CONFIG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, head_dim=32, max_position_embeddings=512, tie_word_embeddings=True)
VOCAB_SIZE = 640


def cache_root() -> Path:
    return Path(os.environ.get("RLHFX_CACHE", Path.home() / ".cache" / "rlhfx"))


def tiny_model_path() -> Path:
    """The tiny model's folder, building it on first use."""
    path = cache_root() / f"tiny-{VERSION}"
    if not (path / "config.json").exists():
        build_tiny_model(path)
    return path


CORPUS_SETS = ("sft", "pref", "kto", "prompts")  # fixed, so data sets added later do not change the tokenizer


def _corpus():
    files = sorted(DATA_DIR / f"demo_{kind}_{split}.jsonl" for kind in CORPUS_SETS for split in ("train", "val"))
    for file in files:
        for line in file.read_text().splitlines():
            yield " ".join(_strings(json.loads(line)))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|pad|>", unk_token=None, chat_template=CHAT_TEMPLATE,
                                   additional_special_tokens=["<|im_start|>"], model_max_length=512)


def build_tiny_model(path: Path) -> None:
    """Write tokenizer + model to `path` atomically (a temp dir renamed into place)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **MODEL_CONFIG)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_cached_model(model, tokenizer, path)


def save_cached_model(model, tokenizer, path: Path) -> None:
    """Write a model folder into the cache atomically: another process building the same folder at the same time
    never sees it half written, and the first complete one wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not path.exists():
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
