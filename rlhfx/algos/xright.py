"""Joint SFT + preference (DPO) training: ALRIGHT, MAXRIGHT and the `mix` baseline, in one trainer.

`--rlhf_type alright|maxright|mix` train one policy on two data sets at once: the SFT set
(`--sft_dataset`, prompt-masked token-mean NLL) and the preference set (`--dataset`, the DPO loss of
algos/losses.py against `--ref_model` or the frozen start). `--lambd` is the weight of the DPO
objective, the SFT objective gets `1 - lambd`:

- alright: each optimizer step draws `u ~ U(0,1)` from a generator seeded with `--seed` (the same
  stream on every rank); `u < lambd` trains a DPO step, else an SFT step.
- maxright: keeps stale weighted gaps `g_sft = (1-lambd)(L_sft - sft_opt)` and
  `g_dpo = lambd (L_dpo - dpo_opt)`; every `--max_eval_steps` steps (step 0 included: that is the
  initialisation) both are refreshed by a no-grad evaluation on the next batch of each set; each
  step trains the objective with the larger gap (ties -> SFT) and overwrites only its own gap with
  the loss it measured. Losses are averaged over ranks before they become gaps.
- mix: `(1-lambd) L_sft + lambd L_dpo` on one batch of each set every step (twice the compute).

Design. The trainer is rlhfx's `PairwiseTrainer` (TRL's DPOTrainer, algos/pairwise.py): the optimizer, schedule,
reference model handling, checkpoints, logging, evaluation on the preference validation set and
DDP come from it, and the DPO loss is its `_compute_loss` (`sequence_logps` + `dpo_loss`). What it
does not fit is the data: TRL's dataloader would hand every step a preference batch, but ALRIGHT
and MAXRIGHT must draw only the batch of the objective they train, and the two sets cycle on their
own. So the Trainer's dataloader yields empty "step tickets" (it only counts steps and epochs;
one epoch = one pass over the SFT set), and `training_step` pulls the real batches from two
`CyclingBatches` iterators, one per set: each shuffles with a seed every rank shares, gives each
rank its slice of each global batch, and restarts with its own epoch counter when exhausted.
The per-step decision is made once per optimizer step (all its gradient-accumulation micro-batches
train the same objective) from state that is identical on every rank (the seeded generator,
rank-averaged gaps); every step the ranks' choices are all-gathered and compared, and a
disagreement stops the run. A MAXRIGHT refresh only peeks at the next batch of each set, so no
batch is drawn that is not trained.

Logged each step (averaged over `--logging_steps`): `objective` (share of DPO in the step: 0 = SFT
step, 1 = DPO step, lambd for mix), `sft_loss`, `dpo_loss` (when trained), the DPO reward metrics,
`gap/sft` and `gap/dpo`, and for MAXRIGHT `refreshed`; at evaluation `eval_sft_loss` (SFT
validation set) next to `eval_loss` / `eval_dpo_loss` and `eval_rewards/accuracies` (preference
validation set). At the end `objectives.json` (every step's choice, as every rank made it, and
where each data set stands) and `trajectory.png` (the eval and train losses in the (SFT loss, DPO
loss) plane with the ideal point (sft_opt, dpo_opt)) land beside curves.png.

Resuming (`--resume_from_checkpoint`) restores what the Trainer does not know about through
`checkpoint_state()` (see rlhfx/training/checkpoints.py): the ALRIGHT generator, MAXRIGHT's gaps, both
iterators' positions and the objective history, so a resumed run trains the same steps as an
uninterrupted one.
"""

import json
import math
from pathlib import Path

import torch
from trl import DPOConfig

from rlhfx.algos.pairwise import PairwiseTrainer
from rlhfx.algos.losses import dpo_loss
from rlhfx.errors import RlhfxError
from rlhfx.training.sft_batches import CyclingBatches, sft_collator

MODES = ("alright", "maxright", "mix")
OBJECTIVE_KEY = "xright_objective"  # marks a training batch built by XrightTrainer
OBJECTIVE_CODE = {"sft": 0, "dpo": 1}


# ---------------------------------------------------------------------------------------------
# The per-step decision, free of models so it can be tested on its own.


def alright_choice(u: float, lambd: float) -> str:
    """ALRIGHT: a DPO step when u < lambd, else an SFT step."""
    return "dpo" if u < lambd else "sft"


class AlrightSampler:
    """One uniform draw per step from a generator seeded with `seed`: the same sequence on every rank."""

    def __init__(self, lambd: float, seed: int):
        self.lambd = lambd
        self.generator = torch.Generator().manual_seed(seed)

    def choose(self) -> str:
        return alright_choice(torch.rand(1, generator=self.generator).item(), self.lambd)


class MaxrightScheduler:
    """MAXRIGHT's stale weighted gaps. Each step: `begin(step, evaluate)` (refresh when due, then choose),
    train the chosen objective, `update(objective, measured_loss)`. alright/mix use it only to log the gaps."""

    def __init__(self, lambd: float, sft_opt: float = 0.0, dpo_opt: float = 0.0, max_eval_steps: int = 10):
        self.lambd, self.sft_opt, self.dpo_opt, self.max_eval_steps = lambd, sft_opt, dpo_opt, max_eval_steps
        self.gaps: dict[str, float | None] = {"sft": None, "dpo": None}

    def gap(self, objective: str, loss: float) -> float:
        if objective == "sft":
            return (1 - self.lambd) * (loss - self.sft_opt)
        return self.lambd * (loss - self.dpo_opt)

    def needs_refresh(self, step: int) -> bool:
        return step % self.max_eval_steps == 0 or None in self.gaps.values()

    def refresh(self, sft_loss: float, dpo_loss: float) -> None:
        self.gaps = {"sft": self.gap("sft", sft_loss), "dpo": self.gap("dpo", dpo_loss)}

    def choose(self) -> str:
        """The objective with the larger gap; ties go to SFT."""
        if None in self.gaps.values():
            raise RuntimeError("MAXRIGHT gaps are not initialised: refresh() first")
        return "sft" if self.gaps["sft"] >= self.gaps["dpo"] else "dpo"

    def update(self, objective: str, loss: float) -> None:
        self.gaps[objective] = self.gap(objective, loss)

    def begin(self, step: int, evaluate) -> tuple[str, bool]:
        """(objective to train at `step`, whether both gaps were refreshed); `evaluate()` -> (L_sft, L_dpo)."""
        refreshed = self.needs_refresh(step)
        if refreshed:
            self.refresh(*evaluate())
        return self.choose(), refreshed


def check_ranks_chose_alike(choices: list[int], step: int) -> None:
    """Every rank must train the same objective at every step; the alternative is silent divergence."""
    if len(set(choices)) > 1:
        raise RlhfxError(f"The ranks chose different objectives at step {step}: {choices} (0 = SFT, 1 = DPO).",
                         "this is a bug in rlhfx's joint SFT + DPO trainer; please report it with the command line.")


class _StepTickets(torch.utils.data.Dataset):
    """What the Trainer's own loop iterates: one empty item per micro-batch; it only counts steps."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return {"step_ticket": index}


# ---------------------------------------------------------------------------------------------
# The trainer.


class XrightTrainer(PairwiseTrainer):
    """PairwiseTrainer (DPO loss) that trains SFT and DPO steps (or their weighted sum) from two cycling data sets."""

    def __init__(self, *args, mode: str, sft_train_dataset, sft_eval_dataset=None, lambd: float = 0.5,
                 sft_opt: float = 0.0, dpo_opt: float = 0.0, max_eval_steps: int = 10, sft_batch_size: int | None = None,
                 **kwargs):
        if mode not in MODES:
            raise ValueError(f"unknown joint training mode {mode!r}")
        super().__init__(*args, **kwargs)
        self.mode, self.lambd = mode, lambd
        self.sft_train_dataset, self.sft_eval_dataset = sft_train_dataset, sft_eval_dataset
        self.sft_batch_size = sft_batch_size or self.args.per_device_train_batch_size
        self.sft_collate = sft_collator(self.processing_class.pad_token_id)
        self.gaps = MaxrightScheduler(lambd, sft_opt, dpo_opt, max_eval_steps)
        self.sampler = AlrightSampler(lambd, self.args.seed)
        self.sft_batches = self.pref_batches = None
        self.history: list[list[int | None]] = []  # per step: every rank's choice (0 sft, 1 dpo, None mix)
        self._micro, self._objective, self._step_losses, self._step_batches = 0, None, {}, []
        self._resume_positions = None  # iterator positions from a checkpoint, applied when the iterators are built

    # -- data --------------------------------------------------------------------------------

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch = SFT global batches per epoch / gradient accumulation."""
        world = self.accelerator.num_processes
        sft_batches = math.ceil(len(self.sft_train_dataset) / (self.sft_batch_size * world))
        return max(1, math.ceil(sft_batches / self.args.gradient_accumulation_steps))

    def get_train_dataloader(self):
        seed, rank, world = self.args.seed, self.accelerator.process_index, self.accelerator.num_processes
        pref_batch = self.args.per_device_train_batch_size
        self.sft_batches = CyclingBatches(self.sft_train_dataset, self.sft_batch_size, self.sft_collate, seed, 0, rank, world)
        self.pref_batches = CyclingBatches(self.train_dataset, pref_batch, self.data_collator, seed, 1, rank, world)
        if self._resume_positions:
            self.sft_batches.seek(self._resume_positions["sft"])
            self.pref_batches.seek(self._resume_positions["pref"])
        tickets = _StepTickets(self.steps_per_epoch() * self.args.gradient_accumulation_steps)
        # batches of one ticket (not batch_size=None): a resume skips the trained ones through the batch sampler
        return torch.utils.data.DataLoader(tickets, batch_size=1, shuffle=False, collate_fn=lambda items: items[0])

    # -- losses ------------------------------------------------------------------------------

    @staticmethod
    def sft_outputs(model, batch):
        """Fused-head forward: per-token log-probs of the labelled (assistant) tokens and their token-mean NLL as .loss."""
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                     use_cache=False, fused_lm_head=True)

    def quiet_dpo_loss(self, model, batch) -> torch.Tensor:
        """The DPO loss of a batch without touching the logged metrics (MAXRIGHT's refresh)."""
        (chosen, rejected), (chosen_len, rejected_len) = self.sequence_logps(model, batch, False)
        (ref_chosen, ref_rejected), _ = self.sequence_logps(model, batch, True)
        losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, chosen_lengths=chosen_len,
                                rejected_lengths=rejected_len, **self.loss_kwargs)
        return losses.mean()

    def _rank_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value.detach().float().reshape(-1).to(self.accelerator.device), "mean")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        objective = inputs.get(OBJECTIVE_KEY) if isinstance(inputs, dict) else None
        if objective is None:  # a preference batch handed over by TRL itself: evaluation
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not self.model.training:
                value = loss[0] if return_outputs else loss
                self._metrics["eval"]["dpo_loss"].append(self._rank_mean(value).item())
            return loss
        parts = {}
        if objective in ("sft", "mix"):
            parts["sft"] = self.sft_outputs(model, inputs["sft"]).loss
        if objective in ("dpo", "mix"):
            parts["dpo"] = self._compute_loss(model, inputs["dpo"], False)
        for name, value in parts.items():
            self._step_losses.setdefault(name, []).append(value.detach())
            self._metrics["train"][f"{name}_loss"].append(self._rank_mean(value).item())
        if objective == "mix":
            return (1 - self.lambd) * parts["sft"] + self.lambd * parts["dpo"]
        return parts[objective]

    # -- one optimizer step ------------------------------------------------------------------

    def _evaluate_both(self, model) -> tuple[float, float]:
        """MAXRIGHT's refresh: no-grad losses on the next batch of each set (peeked, not drawn), rank-averaged."""
        unwrapped = self.accelerator.unwrap_model(model)
        with torch.no_grad():
            sft = self.sft_outputs(unwrapped, self._prepare_inputs(self.sft_batches.peek())).loss
            dpo = self.quiet_dpo_loss(unwrapped, self._prepare_inputs(self.pref_batches.peek()))
        sft, dpo = self._rank_mean(torch.stack([sft, dpo])).tolist()
        return sft, dpo

    def _choose(self, model) -> str:
        if self.mode == "mix":
            return "mix"
        if self.mode == "alright":
            return self.sampler.choose()
        objective, refreshed = self.gaps.begin(self.state.global_step, lambda: self._evaluate_both(model))
        self._metrics["train"]["refreshed"].append(float(refreshed))
        return objective

    def _begin_step(self, model) -> None:
        self._objective = self._choose(model)
        code = OBJECTIVE_CODE.get(self._objective, -1)
        choices = self.accelerator.gather(torch.tensor([code], device=self.accelerator.device)).tolist()
        check_ranks_chose_alike(choices, self.state.global_step)
        self.history.append([None if c < 0 else c for c in choices])
        share = self.lambd if self._objective == "mix" else float(code)
        self._metrics["train"]["objective"].append(share)
        self._step_losses = {}

    def _end_step(self) -> None:
        """Overwrite the trained objectives' gaps with the step's measured loss (mean of micro-batches and ranks)."""
        for name, values in self._step_losses.items():
            self.gaps.update(name, self._rank_mean(torch.stack(values).mean()).item())
        for name, gap in self.gaps.gaps.items():
            if gap is not None:
                self._metrics["train"][f"gap/{name}"].append(gap)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """`inputs` is a step ticket: the batch of the chosen objective comes from our own iterators."""
        if self._micro == 0:
            self._begin_step(model)
        batch = {OBJECTIVE_KEY: self._objective}
        if self._objective in ("sft", "mix"):
            batch["sft"] = next(self.sft_batches)
        if self._objective in ("dpo", "mix"):
            batch["dpo"] = next(self.pref_batches)
        self._step_batches = [batch[k] for k in ("sft", "dpo") if k in batch]
        loss = super().training_step(model, batch)
        self._micro += 1
        if self._micro >= self.current_gradient_accumulation_steps:
            self._end_step()
            self._micro = 0
        return loss

    def floating_point_ops(self, inputs) -> int:
        return sum(super(XrightTrainer, self).floating_point_ops(b) for b in self._step_batches)

    # -- resume ------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict:
        return {"alright_generator": self.sampler.generator.get_state(), "gaps": dict(self.gaps.gaps),
                "history": self.history,
                "data": {"sft": self.sft_batches.position(), "pref": self.pref_batches.position()}}

    def load_checkpoint_state(self, state: dict) -> None:
        self.sampler.generator.set_state(state["alright_generator"])
        self.gaps.gaps = dict(state["gaps"])
        self.history = [list(row) for row in state["history"]]
        self._resume_positions = state["data"]

    # -- evaluation and outputs --------------------------------------------------------------

    def sft_eval_loss(self) -> float:
        """Token-mean NLL over the whole SFT validation set (each rank a strided shard, sums all-reduced)."""
        model = self.model
        was_training = model.training
        model.eval()
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        rows = self.sft_eval_dataset.to_list()[rank::world]
        size = self.args.per_device_eval_batch_size
        totals = torch.zeros(2, device=self.accelerator.device)
        with torch.no_grad():
            for start in range(0, len(rows), size):
                out = self.sft_outputs(model, self._prepare_inputs(self.sft_collate(rows[start:start + size])))
                totals += torch.stack([-out.log_probs.sum(), out.label_mask.sum().float()])
        model.train(was_training)
        totals = self.accelerator.reduce(totals, "sum")
        return (totals[0] / totals[1].clamp(min=1)).item()

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        if eval_dataset is None and metric_key_prefix == "eval" and self.sft_eval_dataset is not None:
            self._metrics["eval"]["sft_loss"].append(self.sft_eval_loss())
        return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        if self.is_world_process_zero():
            record = {
                "mode": self.mode, "lambd": self.lambd,
                "objectives": [row[0] for row in self.history],
                "rank_objectives": self.history,
                "ranks_agree": all(len(set(row)) == 1 for row in self.history),
                "data": {"sft": self.sft_batches.position(), "pref": self.pref_batches.position()},
            }
            Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.args.output_dir) / "objectives.json").write_text(json.dumps(record) + "\n")
        return result


# ---------------------------------------------------------------------------------------------
# The module contract (see rlhfx/algos/__init__.py): the records of alright, maxright and mix point here.


def build_trainer(ctx):
    args, options, mode = ctx.args, ctx.options, ctx.algorithm.name
    config = DPOConfig(**ctx.hf_args, beta=options.beta, max_length=args.max_length, precompute_ref_log_probs=False)
    maxright = {k: getattr(options, k) for k in ("sft_opt", "dpo_opt", "max_eval_steps") if hasattr(options, k)}
    return XrightTrainer(
        model=ctx.model, ref_model=ctx.ref_model, args=config, train_dataset=ctx.train_dataset,
        eval_dataset=ctx.eval_dataset, processing_class=ctx.tokenizer, peft_config=ctx.peft_config,
        callbacks=ctx.callbacks, loss_kwargs=options.loss_kwargs(), mode=mode,
        sft_train_dataset=ctx.sft_train_dataset, sft_eval_dataset=ctx.sft_eval_dataset, lambd=options.lambd,
        sft_batch_size=options.sft_batch_size, **maxright)


def write_outputs(output_dir: Path, options, algo_name: str) -> Path | None:
    """trajectory.png beside curves.png: the run's losses in the (SFT loss, DPO loss) plane."""
    from rlhfx.training.plot import plot_trajectory

    ideal = (getattr(options, "sft_opt", 0.0), getattr(options, "dpo_opt", 0.0))
    return plot_trajectory(Path(output_dir) / "metrics.jsonl", Path(output_dir) / "trajectory.png",
                           f"rlhfx {algo_name} (lambd {options.lambd})", ideal=ideal)
