"""Canonical rows -> token columns the TRL trainers consume, dropping (and counting) rows that are too long."""

from rlhfx.errors import RlhfxError
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template


def make_encoder(args, tokenizer, model_type) -> ChatEncoder:
    """--use_chat_template: the tokenizer's own template; else --template or the model type's."""
    template = None if args.use_chat_template else get_template(args.template or model_type.template)
    return ChatEncoder(tokenizer, template, train_on=args.train_on)


def _encode_sft(row, encoder):
    encoded = encoder.encode_sft(row["messages"])
    return encoded, len(encoded["input_ids"])


def _encode_pairwise(row, encoder):
    prompt_ids = encoder.encode_prompt(row["prompt"])
    chosen_ids = encoder.encode_completion(row["prompt"], row["chosen"])
    rejected_ids = encoder.encode_completion(row["prompt"], row["rejected"])
    encoded = {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}
    return encoded, len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))


ENCODERS = {"sft": _encode_sft, "pairwise": _encode_pairwise}


def encode_rows(kind: str, rows: list[dict], encoder: ChatEncoder, max_length: int, report, split: str):
    """A datasets.Dataset of token columns; rows longer than max_length are dropped and counted."""
    from datasets import Dataset

    encode = ENCODERS[kind]
    kept = []
    name = f"{split} (tokenized)"
    for index, row in enumerate(rows):
        encoded, length = encode(row, encoder)
        if length > max_length:
            report.add("too long", name, index, f"{length} tokens > --max_length {max_length}")
        else:
            kept.append(encoded)
    report.kept(name, len(kept))
    if rows and not kept:
        raise RlhfxError(f"Every {split} row is longer than --max_length {max_length} tokens.",
                         "raise --max_length or shorten the data.")
    return Dataset.from_list(kept) if kept else None
