"""Canonical rows -> token columns the TRL trainers consume, dropping (and counting) rows that are too long."""

import json

from rlhfx.errors import RlhfxError
from rlhfx.templates.choice import TemplateChoice, choose_template
from rlhfx.templates.encoder import ChatEncoder


def make_encoder(args, tokenizer, model_type, run: dict | None = None) -> tuple[ChatEncoder, TemplateChoice]:
    """The run's encoder and its template choice (rlhfx.templates.choice); `run` is the args.json of the run
    the model folder comes from, if any."""
    choice = choose_template(tokenizer, model_type, template=args.template, use_chat_template=args.use_chat_template,
                             explicit_type=args.model_type is not None, run=run, enable_thinking=args.enable_thinking)
    return choice.encoder(tokenizer, args.train_on), choice


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


def _chars(value) -> int:
    """Characters of the text a row's field renders: strings, and the string content of messages."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return _chars(value.get("content"))
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    return 0


# characters of each kind's text whose tokens count against --max_length (mirrors the lengths the encoders return)
TEXT_CHARS = {
    "sft": lambda row: _chars(row["messages"]),
    "pairwise": lambda row: _chars(row["prompt"]) + max(_chars(row["chosen"]), _chars(row["rejected"])),
    "unpaired": lambda row: _chars(row["prompt"]) + _chars(row["completion"]),
    "process": lambda row: _chars(row["prompt"]) + _chars(row["steps"]),
    "prompt": lambda row: _chars(row["prompt"]),
}
# parts of a tokenizer that never delete text (an NFC normalizer may fuse at most 4 code points into one)
_KEEPS_TEXT = {"NFC", "NFD", "NFKC", "NFKD", "Prepend", "Lowercase", "Sequence", "Replace", "ByteLevel", "Metaspace",
               "Digits", "Split", "Punctuation", "UnicodeScripts"}
NORMALIZATION_FACTOR = 4


def max_chars_per_token(tokenizer) -> int | None:
    """The most characters of text one token can stand for (its longest vocabulary entry, times the Unicode
    normalization margin), so a text of more than this x max_length characters cannot fit, tokenized or not.
    None when the tokenizer may delete text (a whitespace-dropping pre-tokenizer, a normalizer that strips, unknown
    runs fused into one token): then only tokenizing tells."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    parts = []

    def walk(node):
        if isinstance(node, dict):
            parts.append(node)
            for key in ("normalizers", "pretokenizers"):
                for child in node.get(key) or []:
                    walk(child)

    walk(spec.get("normalizer"))
    walk(spec.get("pre_tokenizer"))
    model = spec.get("model") or {}
    fuses_unknown = model.get("fuse_unk") and not model.get("byte_fallback") or model.get("type") == "WordPiece"
    strips = any(token.get("lstrip") or token.get("rstrip") for token in spec.get("added_tokens") or [])
    if fuses_unknown or strips or any(p.get("type") not in _KEEPS_TEXT or p.get("behavior") == "Removed"
                            or p.get("type") == "Replace" and not p.get("content") for p in parts):
        return None
    return max(len(token) for token in tokenizer.get_vocab()) * NORMALIZATION_FACTOR


def encode_rows(kind: str, rows: list[dict], encoder: ChatEncoder, max_length: int, report, split: str):
    """A datasets.Dataset of token columns; rows longer than max_length are dropped and counted."""
    from datasets import Dataset

    encode = ENCODERS[kind]
    kept = []
    name = f"{split} (tokenized)"
    per_token = max_chars_per_token(encoder.tokenizer)
    most_chars = per_token * max_length if per_token else None
    for index, row in enumerate(rows):
        chars = TEXT_CHARS[kind](row) if most_chars else 0
        if most_chars and chars > most_chars:  # a huge row would take minutes and gigabytes to tokenize
            report.add("too long", name, index, f"{chars} characters, more than {max_length} tokens can hold")
            continue
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
