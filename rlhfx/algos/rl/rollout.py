"""The rollout stage: the engine samples each prompt's responses, the reward sources score them, the models give
their log-probs (policy, reference) and values (critic), and the estimator turns these into advantages.

Under torchrun each rank rolls out its share of the step's prompts, every sample of a prompt on one rank (group
estimators stay local); reward normalisation, whitening, KL statistics and the adaptive KL controller read the
sums over all ranks (`Ranks`), and so does every logged number. Dropout (LoRA's included) is off throughout, so
the update's ratio is exactly 1 on its first pass.
"""

import json
import math
from contextlib import contextmanager

import torch

from rlhfx.algos import rl_math
from rlhfx.algos.rl.batch import chunks, inputs, layout, response_logits, response_values, select, token_logp
from rlhfx.engines import Sampling
from rlhfx.errors import RlhfxError
from rlhfx.rewards.sources import Sample


def make_rollout_engine(args, config, tokenizer, policy, stops: list[int], ranks):
    """The one place the rollout engine is built. pt generates with the policy itself (under ZeRO-3 transformers
    generates with synced_gpus, so ranks that stop at different lengths wait for each other); vllm starts on --model
    (its base when that is an adapter folder) and gets the policy's weights pushed before every generation; a
    rollout server gets them from the main rank only, the other ranks waiting until the push is done."""
    if config.engine == "vllm" and config.vllm_mode == "server":
        from rlhfx.engines.remote import RemoteEngine, server_url

        return RemoteEngine(server_url(args), tokenizer, stops, policy=policy, timeout=config.vllm_server_timeout,
                            check_every=config.vllm_check_weights_every, logprobs=config.enable_vllm_is_correction,
                            sends=ranks.is_main, agree=lambda failed: ranks.max(float(failed)) > 0)
    if config.engine == "vllm":
        from rlhfx.engines import make_engine
        from rlhfx.models import adapter_base, resolve_model_path

        path = resolve_model_path(args.model, args.model_type)
        base = adapter_base(path)
        return make_engine("vllm", model_path=resolve_model_path(base, None) if base else path,
                           tokenizer=tokenizer, stop_ids=stops, dtype=args.torch_dtype, seed=args.seed,
                           gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                           tp_size=config.vllm_tensor_parallel_size, max_model_len=config.vllm_max_model_len,
                           sleep_level=config.sleep_level, logprobs=config.enable_vllm_is_correction)
    from rlhfx.engines.pt import PtEngine

    prompts_per_call = max(1, config.micro_rollout_batch_size // config.n_samples_per_prompt)
    return PtEngine(policy, tokenizer, stop_ids=stops, batch_size=prompts_per_call)


class RolloutStage:
    pushes_weights = True  # a vllm engine gets the policy's weights before each rollout (Ray: after each update)

    def __init__(self, args, config, engine, rewards, actor_critic, ref_model, ranks, pad_id: int, autocast,
                 kl, reward_moments, completions_path=None, offload=None, multi_turn=None):
        self.args, self.config, self.engine, self.rewards = args, config, engine, rewards
        self.multi_turn = multi_turn  # a MultiTurnRollout with --multi_turn_scheduler, else one turn per sample
        self.policy, self.critic, self.ref_model = actor_critic.policy, actor_critic.critic, ref_model
        self.ranks, self.pad_id, self.autocast = ranks, pad_id, autocast
        self.kl, self.reward_moments, self.completions_path = kl, reward_moments, completions_path
        self.sampling = Sampling(n=config.n_samples_per_prompt, max_new_tokens=config.generate_max_len,
                                 temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
        self.sampling.check()
        self.offload = offload or _nothing  # --offload_model / --offload_optimizer: weights wait on the CPU meanwhile

    def shard(self, rows: list[dict]) -> list[dict]:
        """This rank's contiguous share of the step's prompts (the loop checks they divide evenly)."""
        size = len(rows) // self.ranks.world
        return rows[self.ranks.rank * size : (self.ranks.rank + 1) * size]

    # --- generation and scoring ---------------------------------------------------------------------------

    def generate(self, rows: list[dict], sampling: Sampling):
        """(samples, prompt ids, response ids, finished, engine log-probs, loss masks) for every prompt's n
        completions, prompts' samples consecutive; finished is False for a completion cut at --generate_max_len; the
        log-probs are the engine's own (vllm with --enable_vllm_is_correction; else zeros); a loss mask is 1 on the
        response tokens the model generated (multi-turn: not the inserted ones), None when that is all of them."""
        colocated_vllm = self.config.engine == "vllm" and self.pushes_weights
        if colocated_vllm:
            self.engine.wake_up()
            self.engine.update_weights(self.policy_weights())
        with self.offload(), self.autocast():
            if self.multi_turn is not None:
                generated = self.multi_turn(self.engine, rows, sampling)
            else:
                completions = self.engine.generate([row["prompt_ids"] for row in rows], sampling)
        if colocated_vllm:
            self.engine.sleep()
        if self.multi_turn is not None:
            return generated
        samples, prompt_ids, response_ids, finished, logprobs = [], [], [], [], []
        for row, outs in zip(rows, completions):
            for completion in outs:
                samples.append(Sample(json.loads(row["prompt_messages"]), row["prompt_text"], completion.text,
                                      row.get("label"), completion.token_ids))
                prompt_ids.append(row["prompt_ids"])
                response_ids.append(completion.token_ids or [self.engine.stop_ids[0]])
                finished.append(completion.finished)
                logprobs.append(completion.logprobs or [0.0] * len(response_ids[-1]))
        return samples, prompt_ids, response_ids, finished, logprobs, [None] * len(samples)

    def policy_weights(self):
        return policy_weights(self.policy)

    def score(self, rows: list[dict]) -> list[list[tuple]]:
        """Generate and score: per prompt, its n (sample, prompt ids, response ids, finished, reward, overlong
        penalty, engine log-probs, loss mask), the reward being the sources' and the penalty --overlong_buffer_len's
        shaping (else 0)."""
        config = self.config
        samples, prompt_ids, response_ids, finished, logprobs, masks = self.generate(rows, self.sampling)
        rewards = self.rewards(samples)
        penalty = [0.0] * len(samples)
        if config.overlong_buffer_len:
            lengths = torch.tensor([len(ids) for ids in response_ids])
            penalty = rl_math.overlong_penalty(lengths, config.generate_max_len, config.overlong_buffer_len,
                                               config.overlong_penalty_factor).tolist()
        flat = list(zip(samples, prompt_ids, response_ids, finished, rewards, penalty, logprobs, masks))
        n = config.n_samples_per_prompt
        return [flat[i : i + n] for i in range(0, len(flat), n)]

    def groups(self, rows: list[dict], step: int, all_rows: list[dict]) -> tuple[list[list[tuple]], dict]:
        """This rank's scored groups for `rows` (its share), and the reward statistics of the step's samples over all
        ranks. With --dynamic_sampling only groups whose (shaped) rewards differ are kept, topped up from further
        rounds of other prompts (at most --max_resample_times; every rank takes part in every round, so ZeRO-3's
        collective generation stays in step) to --rollout_batch_size; if none differ the batch is kept. Every rank
        then keeps as many groups as the rank with the fewest, so all ranks run the same number of updates."""
        config = self.config
        groups = self.score(rows)
        raw = torch.tensor(self.ranks.gather([sample[4] for group in groups for sample in group]))
        stats = {"reward": raw.mean().item(), "reward_std": raw.std().item() if len(raw) > 1 else 0.0}
        if config.overlong_buffer_len:
            stats["overlong_penalty"] = sum(self.ranks.gather([s[5] for group in groups for s in group])) / len(raw)
        if not config.dynamic_sampling:
            return groups, stats
        kept, rounds = self._varied(groups), 0
        stats["varied_groups"] = self.ranks.sum(torch.tensor(float(len(kept)))).item() / (len(groups) * self.ranks.world)
        while self.ranks.max(len(rows) - len(kept)) > 0 and rounds < config.max_resample_times:
            rounds += 1
            kept += self._varied(self.score(self.shard(self._extra_rows(step, rounds, all_rows))))
        stats["sampling_rounds"] = rounds
        kept = kept[: len(rows)] if kept else groups
        return kept[: int(-self.ranks.max(-len(kept)))], stats

    def _varied(self, groups: list[list[tuple]]) -> list[list[tuple]]:
        shaped = torch.tensor([sample[4] + sample[5] for group in groups for sample in group])
        varied = rl_math.varied_groups(shaped, self.config.n_samples_per_prompt).tolist()
        return [group for group, keep in zip(groups, varied) if keep]

    def _extra_rows(self, step: int, round_: int, all_rows: list[dict]) -> list[dict]:
        """Dynamic sampling's further prompts: a draw fixed by (seed, step, round), so a resumed run draws the same."""
        generator = torch.Generator().manual_seed(self.args.seed + 1_000_003 * (step + 1) + round_)
        order = torch.randperm(len(all_rows), generator=generator)[: self.config.rollout_batch_size]
        return [all_rows[i] for i in order.tolist()]

    # --- experience ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, rows: list[dict], step: int, all_rows: list[dict]) -> tuple[dict, dict]:
        """This rank's share of the step's rollout as a batch with advantages, and the step's statistics."""
        groups, stats = self.groups(self.shard(rows), step, all_rows)
        batch, more = self.experience(groups, step)
        return batch, {**stats, **more}

    @torch.no_grad()
    def experience(self, groups: list[list[tuple]], step: int) -> tuple[dict, dict]:
        """Scored groups (generated here, or given: tests feed fixed ones) -> the batch the update trains on."""
        config, reduce = self.config, self.ranks.sum
        samples, prompt_ids, response_ids, finished, rewards, overlong, engine_logp, loss_masks = zip(
            *[s for g in groups for s in g])
        device = self.ranks.device
        batch = layout(prompt_ids, response_ids, self.pad_id, device, loss_masks, self.args.packing_samples)
        old_logp, ref_logp, values = self.forward_passes(batch)
        batch.update(old_logp=old_logp, ref_logp=ref_logp)
        mask = batch["mask"]
        if self.completions_path is not None:
            self._log_completions(samples, list(rewards), step)
        scores = torch.tensor(rewards, dtype=torch.float32, device=device) + torch.tensor(overlong, device=device)
        if config.normalize_reward:
            self.reward_moments.update(self.ranks.gather(scores.tolist()))
            scores = self.reward_moments.normalize(scores)
        kl = rl_math.kl_per_token(batch["old_logp"], batch["ref_logp"], config.kl_estimator, mask)
        penalty = torch.zeros_like(kl) if config.use_kl_loss else kl
        batch["values"] = values * mask if values is not None else None
        advantages, returns = rl_math.advantages_and_returns(
            config.advantage_estimator, scores, penalty, self.kl.value, mask, config.n_samples_per_prompt,
            config.gamma, config.lam, config.reward_clip_range, batch["values"], config.whiten_rewards, reduce,
            config.scale_rewards)
        batch.update(advantages=advantages, returns=returns)
        sequence_kl = rl_math.sequence_kl(kl, reduce)
        lengths = reduce(torch.stack([mask.sum(), torch.tensor(float(len(samples)), device=device)]))
        stats = dict(kl=sequence_kl, kl_coef=self.kl.value, response_length=(lengths[0] / lengths[1]).item())
        if config.enable_vllm_is_correction:
            rollout_logp = torch.zeros_like(mask)
            for i, logps in enumerate(engine_logp):
                rollout_logp[i, : len(logps)] = torch.tensor(logps)
            low, high = config.vllm_is_truncated_threshold
            batch["is_weights"], correction = rl_math.rollout_correction(
                batch["old_logp"], rollout_logp, mask, config.vllm_is_correction_type, low, high)
            stats.update({key: self.ranks.mean(value) for key, value in correction.items()})
        if config.overlong_filter:  # truncated completions stay in their group's baseline but out of every loss
            complete = torch.tensor(finished, dtype=mask.dtype, device=mask.device)
            batch["mask"] = mask * complete[:, None]
            stats["truncated"] = 1 - (reduce(complete.sum()) / lengths[1]).item()
        self.kl.update(sequence_kl, int(lengths[1].item()))
        return batch, stats

    def forward_passes(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The responses' log-probs under the policy and the reference, and the critic's values (None without one)."""
        size, autocast, temperature = self.config.micro_rollout_batch_size, self.autocast, self.config.temperature
        old_logp = per_micro(lambda micro: logp(self.policy, micro, temperature), batch, size, autocast)
        ref_logp = per_micro(self._ref_logp, batch, size, autocast)
        values = None if self.critic is None else per_micro(
            lambda micro: response_values(self.critic, **inputs(micro)), batch, size, autocast)
        return old_logp, ref_logp, values

    def _ref_logp(self, micro: dict) -> torch.Tensor:
        if self.ref_model is not None:
            return logp(self.ref_model, micro, self.config.temperature)
        with self.policy.disable_adapter():
            return logp(self.policy, micro, self.config.temperature)

    def _log_completions(self, samples: list[Sample], rewards: list[float], step: int) -> None:
        lines = self.ranks.gather([json.dumps({"step": step + 1, "prompt": s.prompt, "completion": s.response,
                                               "solution": s.label, "reward": r}) for s, r in zip(samples, rewards)])
        if self.ranks.is_main:
            with open(self.completions_path, "a") as f:
                f.writelines(line + "\n" for line in lines)

    @torch.no_grad()
    def evaluate(self, rows: list[dict]) -> dict:
        """Mean reward and length of one greedy response to each held-out prompt, over all ranks (each rank takes an
        equal share, the last padded with repeats that are not counted, so every rank generates as often)."""
        size = math.ceil(len(rows) / self.ranks.world)
        mine = rows[self.ranks.rank * size : (self.ranks.rank + 1) * size]
        real = len(mine)
        mine = mine + [rows[0]] * (size - real)
        greedy = Sampling(n=1, max_new_tokens=self.config.generate_max_len, greedy=True)
        samples, _, response_ids, _, _, masks = self.generate(mine, greedy)
        rewards = self.ranks.gather(self.rewards(samples[:real]))
        lengths = self.ranks.gather([len(ids) if mask is None else sum(mask)
                                     for ids, mask in zip(response_ids[:real], masks[:real])])
        return {"eval_reward": sum(rewards) / len(rewards), "eval_response_length": sum(lengths) / len(lengths)}


def policy_weights(policy):
    """The policy's weights under their Hugging Face names; a LoRA adapter is merged into them. Under ZeRO-3
    each is gathered whole by all ranks together while it is read, so every rank must read them all."""
    if not hasattr(policy, "merge_adapter"):
        return _gathered(policy.named_parameters())
    policy.merge_adapter()
    try:
        return [(name.removeprefix("base_model.model.").replace(".base_layer", ""), p.detach().clone())
                for name, p in policy.named_parameters() if "lora_" not in name]
    finally:
        policy.unmerge_adapter()


def logp(model, micro: dict, temperature: float) -> torch.Tensor:
    """The log-prob of each response token of `micro` under `model`."""
    return token_logp(response_logits(model, **inputs(micro)), micro, temperature)[0]


def per_micro(read, batch: dict, size: int, autocast) -> torch.Tensor:
    """`read(micro)` over the batch's rows, `size` at a time, concatenated."""
    parts = []
    for part in chunks(batch["mask"].shape[0], size):
        with autocast():
            parts.append(read(select(batch, part)))
    return torch.cat(parts)


def reward_sources(args, config, device):
    """Every reward source of the run (models, functions, URLs), each checked to return finite rewards."""
    from rlhfx.rewards.sources import RewardSources

    rewards = RewardSources(
        config.reward_model or [], config.reward_func or [], config.remote_rm_url or [], config.reward_weights,
        args.torch_dtype, config.micro_rollout_batch_size, config.remote_rm_timeout, config.remote_rm_retries,
        device, args.use_chat_template, config, config.reward_func_timeout)
    rewards.sources = [FiniteRewards(source) for source in rewards.sources]
    return rewards


class FiniteRewards:
    """A reward source whose every reward must be a finite number: one NaN/inf would make the advantages, then
    the gradients, then every weight NaN. The run stops naming the source and the sample."""

    def __init__(self, source):
        self.source, self.name = source, type(source).__name__
        for attribute, flag in (("path", "--reward_model"), ("spec", "--reward_func"), ("url", "--remote_rm_url")):
            if hasattr(source, attribute):
                self.name = f"{flag} {getattr(source, attribute)}"

    def __call__(self, samples: list[Sample]) -> list[float]:
        rewards = self.source(samples)
        for i, (reward, sample) in enumerate(zip(rewards, samples)):
            if not math.isfinite(reward):
                raise RlhfxError(f"The reward source {self.name} returned {reward} for sample {i} of the batch "
                                 f"(prompt {sample.prompt[-200:]!r}, response {sample.response[:200]!r}); no update was "
                                 "made with it.", "fix the source so it returns a finite number for every sample, then "
                                 "resume from the last checkpoint (--resume_from_checkpoint latest).")
        return rewards


def _gathered(named):
    """(name, weight) pairs, a ZeRO-3 shard gathered whole (a collective) until the next pair is asked for. A weight
    ZeRO-3 holds whole already (the small ones it keeps so) is left as it is: partitioned again on the way out, it
    would next be gathered inside generation's inference mode and could no longer be trained."""
    for name, param in named:
        if getattr(getattr(param, "ds_status", None), "name", "AVAILABLE") == "AVAILABLE":
            yield name, param
            continue
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            yield name, param


@contextmanager
def _nothing():
    yield
