"""Detect a dataset's layout from its first row, then turn every row into canonical rows of one kind.

Canonical kinds, which the rest of rlhfx consumes:
  sft:      {"messages": [{"role", "content"}, ...]}  optional leading system, then user/assistant
            turns alternating, ending with assistant
  pairwise: {"prompt": [messages ending with a user turn], "chosen": str, "rejected": str}
            (+ "margin": float when the row has one)
  unpaired: {"prompt": [messages], "completion": str, "label": bool}
  prompt:   {"prompt": [messages], "label": str | None}  (label: reference answer or metadata)
  process:  {"prompt": [messages], "steps": [str], "labels": [float]}  one label per reasoning step,
            1.0 good, 0.0 bad, in between for soft labels (process reward models)

Source layouts, detected from the first row's keys (after renames) in this order:
  preference  prompt? / chosen / rejected: strings or message lists (TRL), a prompt string may be an hh-rlhf
              transcript ending "\\n\\nAssistant:" (split into turns); without a prompt, chosen and
              rejected are whole conversations (OpenRLHF) or "Human:/Assistant:" transcripts (hh-rlhf)
              and the prompt is their shared beginning
  messages    OpenAI messages (+ optional rejected_response / label, ms-swift style)
  sharegpt    conversations with from/value (human/gpt/system, also user/assistant)
  alpaca      instruction / input / output or response (+ system, history)
  swift       query / response / history / system (+ rejected_response)
  process     prompt + steps (or TRL's stepwise `completions`) + labels (or label): one label per step,
              0/1, true/false, "+"/"-" or a float in [0, 1]
  prompt      prompt (string or messages) + optional response, or completion + label (KTO)
A KTO label is true/false or 1/0, or with desirable_threshold a score (desirable when >= the threshold).
A reference label for `prompt` rows comes from `label`, `answer` or `solution`.

input_template (OpenRLHF --input_template, e.g. "User: {}\\nAssistant: "): the prompt must be one user
turn (after an optional system turn, whose text goes in front, separated by a newline). It becomes ONE
user message, the template with `{}` replaced by that text, marked `"raw": True`: the encoder emits the
content as is, without the chat template.

A row that cannot be used is dropped and counted in the DropReport with one of the reasons
"missing key", "wrong type", "empty", "chosen == rejected", "bad roles", "prompt mismatch",
"steps/labels mismatch".
"""

import json
import math
import re
from dataclasses import dataclass

from rlhfx.data.report import DropReport
from rlhfx.errors import RlhfxError

KINDS = ("sft", "pairwise", "unpaired", "prompt", "process")

_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}
_TRANSCRIPT_TURN = re.compile(r"\n\n(Human|Assistant): ")
_LABEL_KEYS = ("label", "answer", "solution")
_NEEDS = {
    "sft": "'messages', 'conversations', 'instruction'+'output', 'query'+'response', 'prompt'+'response' "
    "or 'chosen'+'rejected'",
    "pairwise": "'chosen'+'rejected' (with 'prompt', or as whole conversations), "
    "or a conversation plus 'rejected_response'",
    "unpaired": "'prompt'+'completion'+'label', a conversation plus 'label', or any pairwise layout",
    "prompt": "'prompt', 'messages', 'conversations', 'query' or 'instruction'",
    "process": "'prompt' + 'steps' (or 'completions') + 'labels', one label per step",
}


class Drop(Exception):
    """Raised inside row conversion: the row is skipped and counted under `reason`."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def detect_format(keys: set[str]) -> str | None:
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if keys & {"steps", "completions"} and keys & {"labels", "label"}:
        return "process"
    for key, fmt in (("messages", "messages"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
                     ("query", "swift"), ("prompt", "prompt")):
        if key in keys:
            return fmt
    return None


def provided_kinds(fmt: str | None, keys: set[str]) -> set[str]:
    """The kinds a dataset of layout `fmt` whose rows have `keys` can give."""
    if fmt is None:
        return set()
    if fmt == "process":
        return {"process", "prompt"}
    kinds = {"prompt"}
    answer_keys = {"alpaca": {"output", "response"}, "swift": {"response"}, "prompt": {"response"}}.get(fmt)
    if answer_keys is None or answer_keys & keys:
        kinds.add("sft")
    if fmt == "preference" or ("sft" in kinds and "rejected_response" in keys):
        kinds |= {"pairwise", "unpaired"}
    if ("sft" in kinds or "completion" in keys) and "label" in keys:
        kinds.add("unpaired")
    return kinds


def rename_keys(row: dict, renames: dict[str, str]) -> dict:
    """Apply `{source_key: rlhfx_key}`; a renamed key replaces any key already holding the target name."""
    if not renames:
        return row
    targets = set(renames.values())
    out = {k: v for k, v in row.items() if k not in renames and k not in targets}
    for src, dst in renames.items():
        if src in row:
            out[dst] = row[src]
    return out


def normalise_rows(
    rows: list,
    kind: str,
    dataset: str,
    report: DropReport,
    *,
    renames: dict[str, str] | None = None,
    system: str | None = None,
    input_template: str | None = None,
    desirable_threshold: float | None = None,
) -> list[dict]:
    """Canonical `kind` rows from `rows`; drops are counted in `report` (row index = position in `rows`).

    The report's kept count is in source rows: a pair asked for as `unpaired` keeps 1 row, gives 2.
    """
    if kind not in KINDS:
        raise RlhfxError(f"Unknown data kind '{kind}'.", f"Use one of {', '.join(KINDS)}.")
    renames = renames or {}
    if not rows:
        raise RlhfxError(f"Dataset '{dataset}' has no rows.", "Use a dataset with data in it.")
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is not None:  # else every row is dropped below before the converter is needed
        keys = set(rename_keys(first, renames))
        fmt = detect_format(keys)
        if kind not in provided_kinds(fmt, keys):
            raise RlhfxError(
                f"Dataset '{dataset}' cannot give {kind} rows: its first row has keys {sorted(first)} "
                f"(read as {fmt or 'no known format'}), and {kind} rows need {_NEEDS[kind]}.",
                "Name your columns with --prompt_key/--chosen_key/--rejected_key/--response_key/--label_key/"
                "--messages_key, or use a dataset of the right kind.",
            )
        converter = _RowConverter(fmt, keys, kind, renames, system, input_template, desirable_threshold)
    out, kept = [], 0
    for i, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise Drop("wrong type", f"the row is {_type(row)}, not an object")
            out.extend(converter.convert(rename_keys(row, renames)))
            kept += 1
        except Drop as drop:
            report.add(drop.reason, dataset, i, drop.detail)
    report.kept(dataset, kept)
    if kept == 0:
        reason, row_index, detail = report.top_reason(dataset)
        raise RlhfxError(
            f"Every row of dataset '{dataset}' was dropped; the most common reason is '{reason}' "
            f"(e.g. row {row_index}{': ' + detail if detail else ''}).",
            "Fix the data, or map its columns with the --*_key flags.",
        )
    return out


@dataclass
class _Parsed:
    prompt: list[dict]
    answer: str | None = None
    rejected: str | None = None


class _RowConverter:
    """Turns one renamed row of a known layout into canonical rows, or raises Drop."""

    def __init__(self, fmt: str, keys: set[str], kind: str, renames: dict[str, str],
                 system: str | None, input_template: str | None, desirable_threshold: float | None = None):
        self.fmt, self.kind = fmt, kind
        self.desirable_threshold = desirable_threshold
        self.system, self.input_template = system, input_template
        self._source_name = {dst: src for src, dst in renames.items()}
        self.paired = kind in ("pairwise", "unpaired") and (fmt == "preference" or "rejected_response" in keys)
        self.needs_answer = kind != "prompt"
        # KTO rows name the answer `completion`; every other prompt-keyed layout names it `response`.
        self.completion_key = "completion" if kind == "unpaired" and "completion" in keys else "response"

    def convert(self, row: dict) -> list[dict]:
        parsed = getattr(self, "_parse_" + self.fmt)(row)
        prompt = self._finish_prompt(parsed.prompt)
        if self.kind == "prompt":
            return [{"prompt": prompt, "label": self._reference_label(row)}]
        if self.kind == "process":
            return [{"prompt": prompt, **self._steps_and_labels(row)}]
        answer = self._check_reply(parsed.answer, "chosen" if self.paired else "answer")
        if self.kind == "sft":
            return [{"messages": prompt + [{"role": "assistant", "content": answer}]}]
        if not self.paired:
            return [{"prompt": prompt, "completion": answer, "label": self._bool_label(row)}]
        rejected = self._check_reply(parsed.rejected, "rejected")
        if answer == rejected:
            raise Drop("chosen == rejected", None)
        if self.kind == "unpaired":
            return [{"prompt": prompt, "completion": answer, "label": True},
                    {"prompt": prompt, "completion": rejected, "label": False}]
        pair = {"prompt": prompt, "chosen": answer, "rejected": rejected}
        if row.get("margin") is not None:
            pair["margin"] = self._margin(row["margin"])
        return [pair]

    # --- layouts -------------------------------------------------------------------------------

    def _parse_preference(self, row: dict) -> _Parsed:
        """TRL prompt/chosen/rejected, or (no prompt) whole conversations sharing all but the last turn."""
        chosen = self._require(row, "chosen")
        rejected = self._require(row, "rejected") if self.paired else None
        if row.get("prompt") is not None:
            prompt = self._with_row_system(self._prompt_value(row["prompt"]), row)
            rejected_text = self._reply(rejected, "rejected", row) if self.paired else None
            return _Parsed(prompt, self._reply(chosen, "chosen", row), rejected_text)
        chosen_turns = self._conversation(chosen, "chosen")
        parsed = _Parsed(self._with_row_system(chosen_turns[:-1], row), chosen_turns[-1]["content"])
        if self.paired:
            rejected_turns = self._conversation(rejected, "rejected")
            if chosen_turns[:-1] != rejected_turns[:-1]:
                raise Drop("prompt mismatch", f"'{self._name('chosen')}' and '{self._name('rejected')}' "
                                              "differ before their last message")
            parsed.rejected = rejected_turns[-1]["content"]
        return parsed

    def _parse_messages(self, row: dict, key: str = "messages") -> _Parsed:
        turns = self._with_row_system(self._messages(self._require(row, key), key), row)
        if turns and turns[-1]["role"] == "assistant":
            prompt, answer = turns[:-1], turns[-1]["content"]
        elif self.needs_answer:
            raise Drop("bad roles", f"'{self._name(key)}' does not end with an assistant message")
        else:
            prompt, answer = turns, None
        return _Parsed(prompt, answer, self._rejected_response(row))

    def _parse_sharegpt(self, row: dict) -> _Parsed:
        return self._parse_messages(row, "conversations")

    def _parse_alpaca(self, row: dict) -> _Parsed:
        user = self._text(row, "instruction")
        extra = self._text(row, "input", required=False)
        if extra and extra.strip():
            user += "\n" + extra
        prompt = self._with_row_system(self._history(row) + [{"role": "user", "content": user}], row)
        answer_key = "output" if "output" in row or "response" not in row else "response"  # --response_key renames
        return _Parsed(prompt, self._answer_text(row, answer_key), self._rejected_response(row))

    def _parse_swift(self, row: dict) -> _Parsed:
        query = self._text(row, "query")
        prompt = self._with_row_system(self._history(row) + [{"role": "user", "content": query}], row)
        return _Parsed(prompt, self._answer_text(row, "response"), self._rejected_response(row))

    def _parse_process(self, row: dict) -> _Parsed:
        return _Parsed(self._with_row_system(self._prompt_value(self._require(row, "prompt")), row))

    def _parse_prompt(self, row: dict) -> _Parsed:
        prompt = self._with_row_system(self._prompt_value(self._require(row, "prompt")), row)
        key = self.completion_key
        answer = self._reply(self._require(row, key), key, row) if self.needs_answer else None
        return _Parsed(prompt, answer, self._rejected_response(row))

    # --- pieces --------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        """The key as the user's data spells it (before renames)."""
        return self._source_name.get(key, key)

    def _require(self, row: dict, key: str):
        value = row.get(key)
        if value is None:
            raise Drop("missing key", f"no '{self._name(key)}'")
        return value

    def _text(self, row: dict, key: str, required: bool = True) -> str | None:
        value = self._require(row, key) if required else row.get(key)
        if value is not None and not isinstance(value, str):
            raise Drop("wrong type", f"'{self._name(key)}' is {_type(value)}, expected a string")
        return value

    def _answer_text(self, row: dict, key: str) -> str | None:
        return self._text(row, key) if self.needs_answer else None

    def _rejected_response(self, row: dict) -> str | None:
        return self._text(row, "rejected_response") if self.paired else None

    def _messages(self, value, key: str) -> list[dict]:
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise Drop("wrong type", f"'{self._name(key)}' is {_type(value)}, expected a list of messages")
        turns = []
        for message in value:
            if not isinstance(message, dict):
                raise Drop("wrong type", f"'{self._name(key)}' holds {_type(message)}, expected message objects")
            role = message.get("role", message.get("from"))
            content = message.get("content", message.get("value"))
            if not isinstance(role, str) or role.lower() not in _ROLES:
                raise Drop("bad roles", f"unknown role {_short(role)} in '{self._name(key)}'")
            if not isinstance(content, str):
                raise Drop("wrong type", f"the content of a {role} message in '{self._name(key)}' "
                                         f"is {_type(content)}, expected a string")
            turns.append({"role": _ROLES[role.lower()], "content": content})
        return turns

    def _prompt_value(self, value) -> list[dict]:
        """A prompt given as a string (one user turn, or an hh-rlhf transcript's turns) or as messages."""
        if isinstance(value, str):
            return _transcript_prompt(value) or [{"role": "user", "content": value}]
        if not isinstance(value, (list, dict)):
            raise Drop("wrong type", f"'{self._name('prompt')}' is {_type(value)}, expected a string or messages")
        return self._messages(value, "prompt")

    def _reply(self, value, key: str, row: dict | None = None) -> str:
        """An answer given as a string or as messages whose last one is the assistant's answer. After an hh-rlhf
        transcript prompt ("...\n\nAssistant:") the answer's leading space belongs to the transcript."""
        if isinstance(value, str):
            after_transcript = row is not None and isinstance(row.get("prompt"), str) and _transcript_prompt(row["prompt"])
            return value[1:] if after_transcript and value.startswith(" ") else value
        if not isinstance(value, (list, dict)):
            raise Drop("wrong type", f"'{self._name(key)}' is {_type(value)}, expected a string or messages")
        turns = self._messages(value, key)
        if not turns or turns[-1]["role"] != "assistant":
            raise Drop("bad roles", f"'{self._name(key)}' does not end with an assistant message")
        return turns[-1]["content"]

    def _conversation(self, value, key: str) -> list[dict]:
        """A whole conversation: messages, or an hh-rlhf "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript."""
        if isinstance(value, str):
            turns = _transcript(value)
            if turns is None:
                raise Drop("missing key", f"no 'prompt', and '{self._name(key)}' is plain text, not a conversation")
        else:
            turns = self._messages(value, key)
        if not turns or turns[-1]["role"] != "assistant":
            raise Drop("bad roles", f"'{self._name(key)}' does not end with an assistant message")
        return turns

    def _history(self, row: dict) -> list[dict]:
        """ms-swift/alpaca `history`: a list of [query, response] pairs before the current query."""
        history = row.get("history")
        if history is None:
            return []
        turns = []
        if not isinstance(history, list):
            raise Drop("wrong type", f"'{self._name('history')}' is {_type(history)}, "
                                     "expected a list of [query, response] pairs")
        for pair in history:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise Drop("wrong type", f"'{self._name('history')}' holds {_short(pair)}, "
                                         "expected [query, response] strings")
            turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        return turns

    def _with_row_system(self, turns: list[dict], row: dict) -> list[dict]:
        system = self._text(row, "system", required=False)
        if system and system.strip() and not (turns and turns[0]["role"] == "system"):
            return [{"role": "system", "content": system}] + turns
        return turns

    def _finish_prompt(self, turns: list[dict]) -> list[dict]:
        """Add the default system prompt, check roles and contents, apply input_template."""
        if turns and turns[0]["role"] == "system" and not turns[0]["content"].strip():
            turns = turns[1:]
        if self.system and not (turns and turns[0]["role"] == "system"):
            turns = [{"role": "system", "content": self.system}] + turns
        system = turns[0]["content"] if turns and turns[0]["role"] == "system" else None
        body = turns if system is None else turns[1:]
        if not body:
            raise Drop("empty", "the prompt has no user message")
        for i, turn in enumerate(body):
            expected = "user" if i % 2 == 0 else "assistant"
            if turn["role"] != expected:
                raise Drop("bad roles", f"prompt turn {i} is '{turn['role']}', expected '{expected}'")
            if not turn["content"].strip():
                raise Drop("empty", f"prompt turn {i} ({turn['role']}) is empty")
        if body[-1]["role"] != "user":
            raise Drop("bad roles", "the prompt does not end with a user message")
        if self.input_template is None:
            return turns
        if len(body) != 1:
            raise Drop("bad roles", "input_template needs a single-turn prompt")
        text = body[0]["content"] if system is None else system + "\n" + body[0]["content"]
        return [{"role": "user", "content": self.input_template.replace("{}", text), "raw": True}]

    def _check_reply(self, value: str, what: str) -> str:
        if not value.strip():
            raise Drop("empty", f"the {what} is empty")
        return value

    def _bool_label(self, row: dict) -> bool:
        """true/false, 1/0, or with a desirable_threshold a score: desirable when it is at least the threshold."""
        value = self._require(row, "label")
        if isinstance(value, bool):
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise Drop("not finite", f"'{self._name('label')}' is {value}")
        if isinstance(value, (int, float)) and self.desirable_threshold is not None:
            return value >= self.desirable_threshold
        if isinstance(value, (int, float)) and value not in (0, 1):
            raise RlhfxError(
                f"'{self._name('label')}' holds scores (e.g. {value}), but KTO needs each row labelled desirable or "
                "undesirable.",
                f"pass --desirable_threshold T: rows whose '{self._name('label')}' is at least T are desirable, the "
                "others undesirable (e.g. 7 for 1-10 ratings such as UltraFeedback's).")
        if isinstance(value, (int, float)):  # 1/0, or 1.0/0.0 as pandas and parquet write them
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "1.0", "0.0"):
            return value.strip().lower() in ("true", "1", "1.0")
        raise Drop("wrong type", f"'{self._name('label')}' is {_short(value)}, expected true/false or 1/0")

    def _reference_label(self, row: dict) -> str | None:
        for key in _LABEL_KEYS:
            value = row.get(key)
            if value is not None:
                return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return None

    def _steps_and_labels(self, row: dict) -> dict:
        """Process rows: non-empty step strings and one label in [0, 1] per step."""
        key = "steps" if "steps" in row else "completions"
        steps = self._require(row, key)
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            raise Drop("wrong type", f"'{self._name(key)}' is {_short(steps)}, expected a list of step strings")
        if not steps or not all(step.strip() for step in steps):
            raise Drop("empty", f"'{self._name(key)}' has no steps, or an empty one")
        label_key = "labels" if "labels" in row else "label"
        labels = self._require(row, label_key)
        if not isinstance(labels, list):
            raise Drop("wrong type", f"'{self._name(label_key)}' is {_type(labels)}, expected one label per step")
        if len(labels) != len(steps):
            raise Drop("steps/labels mismatch", f"{len(labels)} labels in '{self._name(label_key)}' for "
                                                f"{len(steps)} steps in '{self._name(key)}'")
        return {"steps": steps, "labels": [self._step_label(value, label_key) for value in labels]}

    def _step_label(self, value, key: str) -> float:
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, (int, float)) and 0 <= value <= 1:
            return float(value)
        text = value.strip().lower() if isinstance(value, str) else None
        if text in ("+", "1", "true", "good"):
            return 1.0
        if text in ("-", "0", "false", "bad"):
            return 0.0
        raise Drop("wrong type", f"'{self._name(key)}' holds {_short(value)}, expected 0/1, true/false, '+'/'-' "
                                 "or a number in [0, 1]")

    def _margin(self, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Drop("wrong type", f"'{self._name('margin')}' is {_short(value)}, expected a number")
        if not math.isfinite(value):
            raise Drop("not finite", f"'{self._name('margin')}' is {value}, expected a finite number")
        return float(value)


def _transcript(text: str) -> list[dict] | None:
    parts = _TRANSCRIPT_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    return [{"role": "user" if who == "Human" else "assistant", "content": content}
            for who, content in zip(parts[1::2], parts[2::2])]


def _transcript_prompt(text: str) -> list[dict] | None:
    """The turns of an hh-rlhf prompt: a transcript ending with "\n\nAssistant:", waiting for the answer."""
    head = text.rstrip()
    if not head.endswith("\n\nAssistant:"):
        return None
    turns = _transcript(head[: -len("\n\nAssistant:")])
    return turns if turns and turns[-1]["role"] == "user" else None


def _type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
