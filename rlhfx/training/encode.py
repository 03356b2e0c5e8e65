"""Canonical rows -> token columns the TRL trainers consume, dropping (and counting) rows that are too long."""

from rlhfx.errors import RlhfxError
from rlhfx.templates.choice import TemplateChoice, choose_template
from rlhfx.templates.encoder import ChatEncoder


def make_encoder(args, tokenizer, model_type, run: dict | None = None) -> tuple[ChatEncoder, TemplateChoice]:
    """The run's encoder and its template choice (rlhfx.templates.choice); `run` is the args.json of the run
    the model folder comes from, if any."""
    choice = choose_template(tokenizer, model_type, template=args.template, use_chat_template=args.use_chat_template,
                             explicit_type=args.model_type is not None, run=run)
    return ChatEncoder(tokenizer, choice.template, train_on=args.train_on), choice


def _encode_sft(row, encoder):
    encoded = encoder.encode_sft(row["messages"])
    return encoded, len(encoded["input_ids"])


def _encode_pairwise(row, encoder):
    prompt_ids = encoder.encode_prompt(row["prompt"])
    chosen_ids = encoder.encode_completion(row["prompt"], row["chosen"])
    rejected_ids = encoder.encode_completion(row["prompt"], row["rejected"])
    encoded = {"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids}
    if row.get("margin") is not None:
        encoded["margin"] = float(row["margin"])
    return encoded, len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))


def _encode_unpaired(row, encoder):
    prompt_ids = encoder.encode_prompt(row["prompt"])
    completion_ids = encoder.encode_completion(row["prompt"], row["completion"])
    encoded = {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "label": bool(row["label"])}
    return encoded, len(prompt_ids) + len(completion_ids)


def _encode_process(row, encoder):
    """Prompt ids and each step's ids on their own; the PRM collator puts the placeholder token after every step."""
    prompt_ids = encoder.encode_prompt(row["prompt"])
    step_ids = [list(encoder.tokenizer(step, add_special_tokens=False)["input_ids"]) for step in row["steps"]]
    encoded = {"prompt_ids": prompt_ids, "step_ids": step_ids, "labels": [float(x) for x in row["labels"]]}
    return encoded, len(prompt_ids) + sum(len(ids) + 1 for ids in step_ids)


def _encode_prompt(row, encoder):
    """Online RL: the prompt's ids, its rendered text and messages (for reward sources) and its label."""
    import json

    prompt_ids = encoder.encode_prompt(row["prompt"])
    encoded = {"prompt_ids": prompt_ids, "prompt_text": encoder.prompt_text(row["prompt"]),
               "prompt_messages": json.dumps(row["prompt"]), "label": row.get("label")}
    return encoded, len(prompt_ids)


ENCODERS = {"sft": _encode_sft, "pairwise": _encode_pairwise, "unpaired": _encode_unpaired,
            "process": _encode_process, "prompt": _encode_prompt}


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
    # from_list takes its columns from the first row: give every row every key (None where absent, e.g. margin)
    columns = dict.fromkeys(key for row in kept for key in row)
    return Dataset.from_list([{key: row.get(key) for key in columns} for row in kept]) if kept else None
