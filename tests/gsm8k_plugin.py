r"""ms-swift's GSM8K reward plugin (examples/train/grpo/plugin/gsm8k/gsm8k_plugin.py) on rlhfx's plugin interface:
the same two rewards under the same names. tests/test_swift_examples.py puts this file where
examples/train/grpo/internal/qlora.sh names it.

- gsm8k_accuracy: 1 when the completion's final number equals the reference answer's (within 1e-5; as text when
  either is not a number), else 0. The final number is the last \boxed{...} in the text's last 500 characters, else
  what follows its last `####` (GSM8K's answer marker), commas and spaces dropped.
- gsm8k_format: 1 when the completion has a \boxed{...} or a `####` followed by a number, else 0.
"""

import re

from rlhfx.rewards.builtin import ORM, orms

_BOXED = re.compile(r"\\boxed\{([^}]+)\}")
_AFTER_MARKER = re.compile(r"####\s*([-\d,.\s]+)")
_HAS_ANSWER = re.compile(r"\\boxed\{[^}]+\}|####\s*[-\d,.]+")


def final_number(text: str) -> str:
    tail = text[-500:]
    found = _BOXED.findall(tail) or _AFTER_MARKER.findall(tail)
    return found[-1].replace(",", "").replace(" ", "").strip() if found else ""


def same_answer(predicted: str, reference: str) -> bool:
    if not (predicted and reference):
        return False
    try:
        return abs(float(predicted) - float(reference)) < 1e-5
    except (ValueError, OverflowError):
        return predicted == reference


class GSM8KAccuracy(ORM):
    def __call__(self, completions, solution, **kwargs) -> list[float]:
        return [float(same_answer(final_number(c), final_number(s))) for c, s in zip(completions, solution)]


class GSM8KFormat(ORM):
    def __call__(self, completions, **kwargs) -> list[float]:
        return [float(bool(_HAS_ANSWER.search(c))) for c in completions]


orms["gsm8k_accuracy"] = GSM8KAccuracy
orms["gsm8k_format"] = GSM8KFormat
