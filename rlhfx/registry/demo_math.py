"""The demo math task behind `demo-math` (GRPO prompts with solutions) and `demo-math-sft` (its warm-up data).

Additions of digits 0-4 ("What is 3 + 4?", solution "7"), answered in the R1 format that ms-swift's built-in
rewards check: `<think>3 + 4</think><answer>7</answer>`. The warm-up SFT set always uses that format but
gives the right sum only half of the time (the other half a random wrong one), so a warmed-up model has the format
but not all the sums, and GRPO with `--reward_funcs accuracy format` has an accuracy to raise. Measured on the tiny
model: 250 warm-up steps (batch 16, lr 3e-3, on a digits 0-9 version of this set) gave the format (format
reward 0.97, accuracy 0.08); 40 steps (batch 32, lr 5e-3) on this set did not (format 0.0, accuracy ~0.1).
25 sums are few enough for a 0.4M-parameter model to tell apart in a minute of training; validation prompts are
the same sums under other phrasings (the task is recall, not arithmetic).

Regenerate the bundled files with `python -m rlhfx.registry.demo_math` (deterministic).
"""

import json
import random

from rlhfx.registry.demo_task import DATA_DIR

QUESTIONS = ["What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} + {b}.", "What is {a} plus {b}?"]
DIGITS = range(5)
SFT_ROWS = {"train": 2000, "val": 200}
CORRECT_SHARE = 0.5


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
        answer = a + b if rng.random() < CORRECT_SHARE else rng.choice([x for x in range(10) if x != a + b])
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
