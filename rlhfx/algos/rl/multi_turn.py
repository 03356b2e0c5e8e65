"""Multi-turn rollouts, ms-swift's `--multi_turn_scheduler NAME --max_turns N`.

Each sample is generated turn by turn. After a turn the scheduler decides whether the conversation ends
(`check_finished`); if not, `step` adds to it (a user message, or text appended to the assistant's own answer, as
math_tip_trick's tip) and the model's next turn continues from the whole conversation, up to --max_turns turns.

The training sequence is the prompt and every token after it, exactly as the model was given them while generating;
the loss mask is 1 on the tokens the model generated and 0 on the scheduler's text and the template's glue between
turns (end of turn, the next user message, the assistant header). The rewards score the final assistant message (as
ms-swift's `completions`), with the conversation before it as the prompt.

A scheduler is a class registered by name in `multi_turns`, e.g. from an --external_plugins file:

    from rlhfx.algos.rl.multi_turn import MultiTurnScheduler, multi_turns

    class CheckAgain(MultiTurnScheduler):
        def step(self, trajectory, completion, turn):
            trajectory.messages.append({"role": "user", "content": "Check your answer once more."})

    multi_turns["check_again"] = CheckAgain
"""

import difflib
import json
from dataclasses import dataclass, field, replace

from rlhfx.engines import Completion, Sampling, split_completion
from rlhfx.errors import RlhfxError
from rlhfx.rewards.builtin import answers_match, final_answer
from rlhfx.rewards.sources import Sample


@dataclass
class Trajectory:
    """One sample's conversation. A scheduler reads `messages` (the last one the assistant's, holding this turn's
    text) and `solution` (the row's reference answer, or None) and may change `messages`; the rest is the driver's."""

    messages: list[dict]
    solution: object
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # every token after the prompt: the model's and the inserted ones
    mask: list[int] = field(default_factory=list)  # 1 on the model's tokens
    logprobs: list[float] = field(default_factory=list)  # the engine's, 0 on inserted tokens
    answer_start: int = 0  # where in `ids` the last assistant message starts
    finished: bool = True  # the last turn stopped on a stop token

    def add(self, ids: list[int], mask: list[int], logprobs: list[float] | None = None) -> None:
        """Append tokens with their mask; `logprobs` are the engine's for the mask-1 ones, in order (else 0)."""
        given = iter(logprobs or [])
        self.ids += ids
        self.mask += mask
        self.logprobs += [next(given, 0.0) if m else 0.0 for m in mask]


class MultiTurnScheduler:
    """Base of a scheduler (ms-swift's MultiTurnScheduler, run synchronously): `check_finished` ends a conversation,
    `step` adds to it. `step` may return {"response_token_ids": [...], "response_loss_mask": [...]}: this turn's
    tokens as they go into the sequence (replacing the model's, e.g. cut short, with inserted ones masked 0)."""

    def __init__(self, args=None, tokenizer=None, max_turns: int | None = None):
        self.args, self.tokenizer, self.max_turns = args, tokenizer, max_turns

    def check_finished(self, trajectory: Trajectory, completion: Completion, turn: int) -> bool:
        """A turn cut at the length limit, or turn --max_turns, ends the conversation."""
        return not completion.finished or (self.max_turns is not None and turn >= self.max_turns)

    def step(self, trajectory: Trajectory, completion: Completion, turn: int) -> dict | None:
        raise NotImplementedError(f"{type(self).__name__} must define step(trajectory, completion, turn).")


class MathTipTrick(MultiTurnScheduler):
    """ms-swift's math_tip_trick: a wrong answer gets one second try. This turn's text from its <answer> (or
    </think>) on is cut, the tip below is appended to the assistant's message, and the model continues it. A right
    answer, an answer holding the tip already, a turn cut at the length limit or --max_turns ends it."""

    tip = "But wait... It seems I made a mistake,"

    def check_finished(self, trajectory, completion, turn):
        answer = trajectory.messages[-1]["content"]
        if trajectory.solution is None:
            raise RlhfxError("--multi_turn_scheduler math_tip_trick checks each answer against its row's solution, "
                             "and a prompt has none.", "give every row a `solution` (or `answer` / `label`) column, "
                             "or name it with --label_key.")
        if self.tip in answer or answers_match(final_answer(answer), str(trajectory.solution)):
            return True
        return super().check_finished(trajectory, completion, turn)

    def step(self, trajectory, completion, turn):
        text = completion.text
        cut = min([text.index(tag) for tag in ("<answer>", "</think>") if tag in text], default=len(text))
        kept = _prefix_within(self.tokenizer, completion.token_ids, cut)
        before = trajectory.messages[-1]["content"][: len(trajectory.messages[-1]["content"]) - len(text)]
        trajectory.messages[-1]["content"] = before + self.tokenizer.decode(kept, skip_special_tokens=True) + self.tip
        tip = self.tokenizer(self.tip, add_special_tokens=False)["input_ids"]
        return {"response_token_ids": kept + tip, "response_loss_mask": [1] * len(kept) + [0] * len(tip)}


def _prefix_within(tokenizer, ids: list[int], chars: int) -> list[int]:
    """The longest prefix of `ids` whose text is at most `chars` characters (a stop token never kept), found by
    bisection: a prefix's text never gets shorter as tokens are added."""
    kept, most = 0, len(ids)
    while kept < most:
        middle = (kept + most + 1) // 2
        if len(tokenizer.decode(ids[:middle], skip_special_tokens=True)) <= chars:
            kept = middle
        else:
            most = middle - 1
    while kept and ids[kept - 1] in tokenizer.all_special_ids:
        kept -= 1
    return ids[:kept]


multi_turns: dict = {"math_tip_trick": MathTipTrick}


def check_scheduler(name: str) -> None:
    if name not in multi_turns:
        close = difflib.get_close_matches(name, list(multi_turns), n=1, cutoff=0.6)
        raise RlhfxError(f"--multi_turn_scheduler {name!r} is not a known scheduler.",
                         (f"did you mean {close[0]!r}? " if close else "") + f"Registered: {', '.join(multi_turns)}; "
                         "more through --external_plugins FILE (from rlhfx.algos.rl.multi_turn import "
                         "MultiTurnScheduler, multi_turns; multi_turns['name'] = MyScheduler).")


class MultiTurnRollout:
    """Generates the samples of a rollout turn by turn; returns what RolloutStage.generate does (with the masks).

    `agree(pending)` is whether any rank still has a conversation going: every rank generates as often (a rank
    whose conversations have all ended generates a throwaway turn), so ZeRO-3's collective generation stays in step.
    With --completion_length_limit_scope total the turns share --max_completion_length tokens after the prompt."""

    def __init__(self, scheduler: MultiTurnScheduler, encoder, stop_ids: list[int], max_turns: int | None,
                 total_limit: bool, agree=bool):
        self.scheduler, self.encoder, self.stop_ids = scheduler, encoder, stop_ids
        self.max_turns, self.total_limit, self.agree = max_turns, total_limit, agree

    def __call__(self, engine, rows: list[dict], sampling: Sampling):
        first = engine.generate([row["prompt_ids"] for row in rows], sampling)
        trajectories = [Trajectory(json.loads(row["prompt_messages"]), row.get("label"), row["prompt_ids"])
                        for row, outs in zip(rows, first) for _ in outs]
        completions = [c for outs in first for c in outs]
        pending, turn, once = list(range(len(trajectories))), 1, replace(sampling, n=1)
        while True:
            pending = [i for i, c in zip(pending, completions)
                       if self._advance(trajectories[i], c, turn, sampling.max_new_tokens)]
            if not self.agree(bool(pending)):
                break
            turn += 1
            prompts = [trajectories[i].prompt_ids + trajectories[i].ids for i in pending]
            completions = [outs[0] for outs in engine.generate(prompts or [trajectories[0].prompt_ids], once)]
        return self._outputs(trajectories)

    def _advance(self, t: Trajectory, completion: Completion, turn: int, limit: int) -> bool:
        """Add this turn to `t`; whether the conversation goes on."""
        if self.total_limit:  # this turn gets what the earlier ones left of the limit
            completion = split_completion(self.encoder.tokenizer, completion.token_ids[: limit - len(t.ids)],
                                          self.stop_ids, completion.logprobs)
        if t.messages[-1]["role"] == "assistant":
            t.messages[-1]["content"] += completion.text
        else:
            t.answer_start = len(t.ids)
            t.messages.append({"role": "assistant", "content": completion.text})
        t.finished = completion.finished
        model = completion.token_ids
        if (self.scheduler.check_finished(t, completion, turn) or turn == self.max_turns
                or (self.total_limit and len(t.ids) + len(model) >= limit)):
            t.add(model, [1] * len(model), completion.logprobs)
            return False
        answer = t.messages[-1]["content"]
        result = self.scheduler.step(t, completion, turn) or {}
        if "response_token_ids" in result:
            ids = list(result["response_token_ids"])
            mask = list(result.get("response_loss_mask", [1] * len(ids)))
            if len(mask) != len(ids):
                raise RlhfxError(f"The scheduler {type(self.scheduler).__name__} returned {len(ids)} "
                                 f"response_token_ids and {len(mask)} response_loss_mask values.",
                                 "return one mask value per token (1: the model's, 0: inserted).")
            t.add(ids, mask, result.get("rollout_logprobs", completion.logprobs))
        elif t.messages[-1]["role"] == "assistant":  # the step appended to the model's own answer
            added = t.messages[-1]["content"]
            if not added.startswith(answer):
                raise RlhfxError(f"The scheduler {type(self.scheduler).__name__} changed the assistant's text, so its "
                                 "tokens are not known.", "append to it, or return the turn's tokens from step(): "
                                 "{'response_token_ids': [...], 'response_loss_mask': [...]}.")
            model = model[:-1] if completion.finished else model  # the answer goes on: its stop token goes
            t.add(model, [1] * len(model), completion.logprobs)
            tip = self.encoder.tokenizer(added[len(answer):], add_special_tokens=False)["input_ids"]
            t.add(tip, [0] * len(tip))
        else:
            t.add(model, [1] * len(model), completion.logprobs)
        if t.messages[-1]["role"] != "assistant":
            glue = self._glue(t)
            t.add(glue, [0] * len(glue))
        if self.total_limit and len(t.ids) >= limit:  # no room left for another turn
            t.finished = False
            return False
        return True

    def _glue(self, t: Trajectory) -> list[int]:
        """The template's tokens after the assistant's answer up to the model's next turn: the end of its turn (less
        the stop token the model generated), the messages the step added, the assistant header."""
        last = max(i for i, m in enumerate(t.messages) if m["role"] == "assistant")
        before = self.encoder.prompt_text(t.messages[:last]) + t.messages[last]["content"]
        after = self.encoder.prompt_text(t.messages)
        if not after.startswith(before):
            raise RlhfxError("The chat template renders the conversation before the scheduler's new message "
                             "differently once it follows, so the turns cannot be joined token by token.",
                             "pick a template by name (--template chatml, llama3, ...).")
        glue = self.encoder.tokenizer(after[len(before):], add_special_tokens=False)["input_ids"]
        return glue[1:] if t.ids and glue and glue[0] == t.ids[-1] and glue[0] in self.stop_ids else glue

    def _outputs(self, trajectories: list[Trajectory]):
        samples, prompt_ids, response_ids, finished, logprobs, masks = [], [], [], [], [], []
        for t in trajectories:
            last = max(i for i, m in enumerate(t.messages) if m["role"] == "assistant")
            prompt = t.messages[:last]
            samples.append(Sample(prompt, self.encoder.prompt_text(prompt), t.messages[last]["content"], t.solution,
                                  t.ids[t.answer_start:]))
            prompt_ids.append(t.prompt_ids)
            response_ids.append(t.ids)
            finished.append(t.finished)
            logprobs.append(t.logprobs)
            masks.append(t.mask)
        return samples, prompt_ids, response_ids, finished, logprobs, masks
