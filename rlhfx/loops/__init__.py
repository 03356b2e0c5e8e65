"""Loops that make their own training data (`rlhfx pipeline NAME`), as the seeds run them in shell loops.

Each iteration i, in out/iter_i/: generate (`rlhfx sample --task generate` with the current policy) ->
score (`rlhfx sample --task rm --post_processor P`) -> train (`rlhfx sft` or `rlhfx rlhf --rlhf_type dpo`,
into iter_i/model, the next iteration's policy). After the last iteration the final policy answers the
first iteration's prompts again (out/final/), so the start and end rewards compare like with like; then a
summary table, summary.json and rewards.png. state.json (rlhfx.loops.state) makes a killed run resumable.
The stages call, in-process, what the commands call (rlhfx.loops.stages): the sampling library and the training job
(rlhfx.algos.job), so a loop does nothing a user could not do by hand.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopSpec:
    name: str
    post_processor: str  # `rlhfx sample --post_processor`: what the scored samples become
    data_file: str  # the training data each iteration writes
    train: str  # the algorithm each iteration trains: sft (`rlhfx sft`) or an --rlhf_type of `rlhfx rlhf`
    summary: str
    single_pass: bool = False  # one iteration only (conditional SFT)

    @property
    def command(self) -> str:
        return "sft" if self.train == "sft" else "rlhf"


LOOPS = {spec.name: spec for spec in [
    LoopSpec("rs", "rs", "sft.jsonl", "sft",
             "rejection sampling / RAFT: best-of-n from the current policy, keep the best answer per prompt, SFT on it"),
    LoopSpec("iterative_dpo", "iter_dpo", "pairs.jsonl", "dpo",
             "iterative (online) DPO, RLHFlow recipe: best-vs-worst pairs of K samples, DPO from the previous policy"),
    LoopSpec("csft", "csft", "csft.jsonl", "sft",
             "conditional SFT: samples scored and written into the prompt, SFT; answers conditioned on a high score",
             single_pass=True),
]}
