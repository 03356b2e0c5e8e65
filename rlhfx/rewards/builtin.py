"""Named rule-based rewards, ms-swift's way: `--reward_funcs accuracy format` and `--external_plugins my_plugin.py`.

A named reward is a class (or a plain function) in the registry `orms`, ms-swift's interface:

    class MyReward(ORM):                       # ORM.__init__(args) keeps the run's reward options as self.args
        def __call__(self, completions, solution, **kwargs) -> list[float]: ...
    orms["my_reward"] = MyReward               # in a file passed to --external_plugins

It is called with keywords: `completions` (response texts), `solution` (each row's reference answer: its
`solution`, `answer` or `label` column, or None), `prompts` (rendered prompt texts), `messages` (prompts as
messages) and `response_token_ids` (None where the samples carry no tokens: a file of answers without them).
`self.args` is rlhfx.algos.options.RewardOptions (online RL: RLOptions, which extends it), with the length knobs
filled in. The built-ins follow ms-swift's swift/rewards/orm.py:

- accuracy: 1 when the final answer equals the reference, else 0. The answer is the text in <answer></answer>,
  else the last \\boxed{}, else the last number; the reference likewise (else the whole text). Numbers compare
  by value, other answers as text without spaces. (ms-swift checks with math_verify's symbolic parser; this
  rule needs no extra package and agrees on numeric answers.)
- format: 1 when the completion is exactly `<think>...</think>` then `<answer>...</answer>`, else 0.
- cosine: cos-scheduled by the length L in tokens (arXiv 2502.03373): from --cosine_min_len_value_correct
  (L = 0) to --cosine_max_len_value_correct (L = --cosine_max_len) when accurate, from
  --cosine_min_len_value_wrong to --cosine_max_len_value_wrong when not.
- repetition: --repetition_max_penalty x (1 - distinct word n-grams / all n-grams), n = --repetition_n_grams.
- soft_overlong: DAPO's penalty min(0, -(L - (L_max - L_cache)) / L_cache), --soft_max_length and
  --soft_cache_length.
"""

import difflib
import math
import re
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.rewards.functions import import_user_file


class ORM:
    """Base of a named reward (ms-swift's ORM): keeps the run's reward options; __call__ returns one float per
    completion."""

    def __init__(self, args=None):
        self.args = args

    def __call__(self, completions: list[str], **kwargs) -> list[float]:
        raise NotImplementedError


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    r"""The content of the last \boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def final_answer(text: str) -> str | None:
    """<answer> content, else the last \\boxed{}, else the last number; None when there is none."""
    tagged = _ANSWER.search(text)
    if tagged:
        text = tagged.group(1)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if tagged:
        return text.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").strip())
    except ValueError:
        return None


def reference_answer(text: str) -> str:
    """A reference's <answer> content, else its last \\boxed{}, else the whole text."""
    tagged = _ANSWER.search(text)
    text = tagged.group(1) if tagged else text
    boxed = last_boxed(text)
    return (text if boxed is None else boxed).strip()


def answers_match(answer: str | None, reference: str) -> bool:
    gold = reference_answer(reference)
    if answer is None or not gold:
        return False
    a, g = _as_number(answer), _as_number(gold)
    if a is not None and g is not None:
        return math.isclose(a, g, rel_tol=1e-9, abs_tol=1e-9)
    return "".join(answer.split()) == "".join(gold.split())


def _need_tokens(response_token_ids, name: str) -> list[list[int]]:
    if response_token_ids is None:
        raise RlhfxError(f"The {name} reward scores each completion by its length in tokens, and these samples do not "
                         "carry their tokens.", "score while generating (`rlhfx sample --task generate`), or a file "
                         "`rlhfx sample` wrote (its rows keep output_ids).")
    return response_token_ids


def _need_solutions(solution, name: str) -> list[str]:
    if solution is None or any(s is None for s in solution):
        raise RlhfxError(f"The {name} reward compares each completion with the row's reference answer, and some "
                         "prompts have none.", "give every row a `solution` (or `answer` / `label`) column, or "
                         "name it with --label_key.")
    return [str(s) for s in solution]


class Accuracy(ORM):
    def __call__(self, completions, solution=None, **kwargs):
        solutions = _need_solutions(solution, "accuracy")
        return [float(answers_match(final_answer(c), s)) for c, s in zip(completions, solutions)]


class Format(ORM):
    PATTERN = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>(?![\s\S])", re.DOTALL | re.MULTILINE)

    def __call__(self, completions, **kwargs):
        return [1.0 if self.PATTERN.match(c) else 0.0 for c in completions]


class Cosine(ORM):
    def __init__(self, args=None):
        super().__init__(args)
        self.max_len = args.cosine_max_len
        self.accuracy = Accuracy(args)

    @staticmethod
    def cosfn(t: int, T: int, min_value: float, max_value: float) -> float:
        """max_value at t = 0, falling along half a cosine to min_value at t = T."""
        return max_value - (max_value - min_value) * (1 - math.cos(t * math.pi / T)) / 2

    def __call__(self, completions, solution=None, response_token_ids=None, **kwargs):
        a = self.args
        rewards = []
        for ids, correct in zip(_need_tokens(response_token_ids, "cosine"), self.accuracy(completions, solution)):
            if correct >= 1:
                at_zero, at_max = a.cosine_min_len_value_correct, a.cosine_max_len_value_correct
            else:
                at_zero, at_max = a.cosine_min_len_value_wrong, a.cosine_max_len_value_wrong
            rewards.append(self.cosfn(len(ids), self.max_len, at_max, at_zero))
        return rewards


class Repetition(ORM):
    def __call__(self, completions, **kwargs):
        n, penalty = self.args.repetition_n_grams, self.args.repetition_max_penalty
        rewards = []
        for completion in completions:
            words = completion.lower().split()
            if len(words) < n:
                rewards.append(0.0)
                continue
            ngrams = list(zip(*[words[i:] for i in range(n)]))
            rewards.append((1 - len(set(ngrams)) / len(ngrams)) * penalty)
        return rewards


class SoftOverlong(ORM):
    def __init__(self, args=None):
        super().__init__(args)
        self.max_length = args.soft_max_length
        self.cache_length = args.soft_cache_length
        if self.cache_length is None or not 0 < self.cache_length < self.max_length:
            raise RlhfxError(f"The soft_overlong reward needs 0 < --soft_cache_length < --soft_max_length "
                             f"({self.max_length}); got {self.cache_length}.",
                             "pass e.g. --soft_cache_length 256 (the last 256 tokens before the limit are penalised).")

    def __call__(self, completions, response_token_ids=None, **kwargs):
        expected = self.max_length - self.cache_length
        return [min(-(len(ids) - expected) / self.cache_length, 0.0)
                for ids in _need_tokens(response_token_ids, "soft_overlong")]


orms: dict = {"accuracy": Accuracy, "format": Format, "cosine": Cosine, "repetition": Repetition,
              "soft_overlong": SoftOverlong}


def load_plugins(paths) -> None:
    """Run each --external_plugins file; its `orms[...] = ...` lines register rewards in `orms`."""
    for spec in paths or []:
        path = Path(spec)
        if not path.is_file():
            raise RlhfxError(f"--external_plugins file {spec} does not exist.", "check the path.")
        import_user_file(path, f"--external_plugins file {spec}")


def is_named(spec: str) -> bool:
    """Whether --reward_funcs `spec` names a registered reward rather than `demo` or a .py file."""
    return spec != "demo" and not spec.endswith(".py")


def check_named(spec: str) -> None:
    if spec not in orms:
        close = difflib.get_close_matches(spec, [*orms, "demo"], n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            f"Registered: {', '.join(orms)}, demo; more through --external_plugins FILE (orms['name'] = MyReward) "
            "or a .py file defining reward_func(queries, prompts, labels).")
        raise RlhfxError(f"--reward_funcs {spec!r} is not a known reward function.", hint)


class NamedReward:
    """A reward source (samples -> floats) around a registered reward, built with the run's flags."""

    def __init__(self, spec: str, args):
        check_named(spec)
        registered = orms[spec]
        self.spec = spec
        self.func = registered(args) if isinstance(registered, type) else registered

    def __call__(self, samples) -> list[float]:
        from rlhfx.rewards.functions import call_reward_func

        def call(queries, prompts, labels):
            tokens = [s.token_ids for s in samples]
            return self.func(completions=[s.response for s in samples], solution=labels, prompts=prompts,
                             messages=[s.messages for s in samples],
                             response_token_ids=None if None in tokens else tokens)

        return call_reward_func(call, [s.prompt + s.response for s in samples], [s.prompt for s in samples],
                                [s.label for s in samples], self.spec)
