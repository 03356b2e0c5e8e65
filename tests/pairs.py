"""Demo preference rows encoded the way rlhfx's runner encodes them (chatml), for trainer-level tests."""

import json

from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template


def encoded_pairs(tokenizer, n: int) -> list[dict]:
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    pairs = []
    for line in (DATA_DIR / "demo_pref_train.jsonl").read_text().splitlines()[:n]:
        row = json.loads(line)
        prompt = [{"role": "user", "content": row["prompt"]}]
        pairs.append({"prompt_ids": encoder.encode_prompt(prompt),
                      "chosen_ids": encoder.encode_completion(prompt, row["chosen"]),
                      "rejected_ids": encoder.encode_completion(prompt, row["rejected"])})
    return pairs
