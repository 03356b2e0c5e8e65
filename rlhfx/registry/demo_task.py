"""The demo task behind the bundled data sets, and its rule-based reward.

A user asks about a coloured animal ("Tell me about the red fox."). A helpful answer names that
exact colour and animal ("The red fox is calm."); unhelpful ones refuse ("I do not know.") or name
the wrong colour or animal. A tiny model learns the format and the copying in a minute of CPU
SFT; the SFT data holds helpful and refusing answers half and half, so the SFT model helps only
about half the time and preference training (DPO, KTO, PPO, ...) has something visible to fix.

Validation rows use colour/animal pairs that never occur in training, so held-out metrics measure
a learned rule, not memorised pairs.

Regenerate the bundled files with `python -m rlhfx.registry.demo_task` (deterministic).
"""

import json
import random
from pathlib import Path

COLORS = ["red", "blue", "green", "yellow", "black", "white", "pink", "gray", "brown", "purple", "orange", "gold"]
ANIMALS = ["cat", "dog", "fox", "owl", "bear", "frog", "duck", "wolf", "fish", "bird", "horse", "mouse", "lion",
           "goat", "crab", "bee"]
ADJECTIVES = ["happy", "small", "fast", "calm", "brave", "quiet", "kind", "big"]
QUESTIONS = ["Tell me about the {}.", "Describe the {}.", "What do you know about the {}?", "Say something about the {}."]
REFUSAL = "I do not know."
SYSTEM = "You are a helpful assistant."
FOLLOW_UP = ("Thank you!", "You are welcome.")

DATA_DIR = Path(__file__).parent / "demo_data"
SIZES = {"train": {"sft": 2000, "pref": 2000, "kto": 2000, "prompts": 500, "prm": 2000},
         "val": {"sft": 200, "pref": 200, "kto": 200, "prompts": 100, "prm": 200}}


def reward(response: str, label: str) -> float:
    """1.0 for an answer naming both the asked colour and animal, 0.5 for one of them, 0 otherwise.

    `label` is "colour animal" as stored in the demo prompt set. Naming a wrong colour or animal
    as well costs 0.5, so listing every word is never rewarded.
    """
    color, animal = label.split()
    words = set(response.lower().replace(".", " ").replace("!", " ").split())
    score = 0.5 * (color in words) + 0.5 * (animal in words)
    wrong = (words & set(COLORS)) - {color} or (words & set(ANIMALS)) - {animal}
    return max(score - 0.5 * bool(wrong), 0.0)


def split_pairs(seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """All colour/animal pairs, 85% for training and 15% held out."""
    pairs = [(c, a) for c in COLORS for a in ANIMALS]
    random.Random(seed).shuffle(pairs)
    n_val = int(len(pairs) * 0.15)
    return {"val": pairs[:n_val], "train": pairs[n_val:]}


def _question(rng: random.Random, color: str, animal: str) -> str:
    return rng.choice(QUESTIONS).format(f"{color} {animal}")


def _helpful(rng: random.Random, color: str, animal: str) -> str:
    return f"The {color} {animal} is {rng.choice(ADJECTIVES)}."


def _unhelpful(rng: random.Random, color: str, animal: str) -> str:
    """A refusal half the time, otherwise an answer about the wrong colour or the wrong animal."""
    roll = rng.random()
    if roll < 0.5:
        return REFUSAL
    if roll < 0.75:
        return _helpful(rng, rng.choice([c for c in COLORS if c != color]), animal)
    return _helpful(rng, color, rng.choice([a for a in ANIMALS if a != animal]))


def _steps(rng: random.Random, color: str, animal: str) -> tuple[list[str], list[int]]:
    """The helpful answer cut into two reasoning steps, "The <colour>" and " <animal> is <adjective>.".
    Each step is good (1) half the time; otherwise it is bad (0) by naming a wrong colour / animal (told
    apart only by comparing with the prompt) or no colour / animal at all ("The big", " one is ...").
    Process reward model demo."""
    words, labels = [], []
    for i, (asked, pool) in enumerate(((color, COLORS), (animal, ANIMALS))):
        roll = rng.random()
        if roll < 0.5:
            words.append(asked)
        elif roll < 0.75:
            words.append(rng.choice([x for x in pool if x != asked]))
        else:
            words.append(rng.choice(ADJECTIVES) if i == 0 else "one")
        labels.append(int(roll < 0.5))
    return [f"The {words[0]}", f" {words[1]} is {rng.choice(ADJECTIVES)}."], labels


def make_rows(kind: str, pairs: list[tuple[str, str]], n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        color, animal = rng.choice(pairs)
        question = _question(rng, color, animal)
        if kind == "sft":
            answer = _helpful(rng, color, animal) if i % 2 == 0 else REFUSAL
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            if rng.random() < 0.2:
                messages = [{"role": "system", "content": SYSTEM}] + messages
            if rng.random() < 0.1:
                messages += [{"role": "user", "content": FOLLOW_UP[0]}, {"role": "assistant", "content": FOLLOW_UP[1]}]
            rows.append({"messages": messages})
        elif kind == "pref":
            rows.append({"prompt": question, "chosen": _helpful(rng, color, animal),
                         "rejected": _unhelpful(rng, color, animal)})
        elif kind == "kto":
            good = i % 2 == 0
            completion = _helpful(rng, color, animal) if good else _unhelpful(rng, color, animal)
            rows.append({"prompt": question, "completion": completion, "label": good})
        elif kind == "prm":
            steps, labels = _steps(rng, color, animal)
            rows.append({"prompt": question, "steps": steps, "labels": labels})
        elif kind == "prompts":
            rows.append({"prompt": question, "label": f"{color} {animal}"})
        else:
            raise ValueError(kind)
    return rows


def write_all(out_dir: Path = DATA_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = split_pairs()
    for split, sizes in SIZES.items():
        for kind, n in sizes.items():
            rng = random.Random(f"{kind}-{split}")
            rows = make_rows(kind, pairs[split], n, rng)
            with open(out_dir / f"demo_{kind}_{split}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    write_all()
