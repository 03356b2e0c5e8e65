"""The demo math task behind `demo-math` (GRPO prompts with solutions) and `demo-math-sft` (its warm-up data).

Additions of digits 0-4 ("What is 3 + 4?", solution "7"), answered in the R1 format that ms-swift's built-in
rewards check: `<think>3 + 4</think><answer>7</answer>`. The warm-up SFT set always uses that format and always
writes the sum's neighbourhood, but gives the right sum only 30% of the time and the off-by-one slip a + b + 1 the rest:
a warmed-up model has the format and the sums (both answers depend on them), answers mostly wrong, and GRPO with
`--reward_funcs accuracy format` has one consistent slip to unlearn. (Wrong answers drawn at random taught the tiny
model no sums at all: after 300 warm-up steps it put 0.17 on the right sum, barely above chance; with the slip, 200
steps put 0.36 there, tests/test_grpo_math.py.) Validation prompts are the same 25 sums under other phrasings.

Regenerate the bundled files with `python -m rlhfx.registry.demo_math` (deterministic).
"""

import json
import random

from rlhfx.registry.demo_task import DATA_DIR

QUESTIONS = ["What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} + {b}.", "What is {a} plus {b}?"]
DIGITS = range(5)
SFT_ROWS = {"train": 2000, "val": 200}
CORRECT_SHARE = 0.3


def completion(a: int, b: int, answer: int) -> str:
    return f"<think>{a} + {b}</think><answer>{answer}</answer>"


def prompt_rows(split: str, rng: random.Random) -> list[dict]:
    pairs = [(a, b) for a in DIGITS for b in DIGITS]
    if split == "train":
        return [{"prompt": q.format(a=a, b=b), "solution": str(a + b)} for q in QUESTIONS for a, b in pairs]
    return [{"prompt": rng.choice(QUESTIONS).format(a=a, b=b), "solution": str(a + b)} for a, b in pairs]


def sft_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        a, b = rng.choice(DIGITS), rng.choice(DIGITS)
        answer = a + b if rng.random() < CORRECT_SHARE else a + b + 1
        rows.append({"messages": [{"role": "user", "content": rng.choice(QUESTIONS).format(a=a, b=b)},
                                  {"role": "assistant", "content": completion(a, b, answer)}]})
    return rows


def write_all() -> None:
    rng = random.Random(0)
    for split in ("train", "val"):
        for stem, rows in (("demo_math", prompt_rows(split, rng)), ("demo_math_sft", sft_rows(SFT_ROWS[split], rng))):
            (DATA_DIR / f"{stem}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    write_all()
