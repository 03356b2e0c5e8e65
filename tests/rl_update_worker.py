"""One online RL step on fixed rollouts, run alone or under torchrun by tests/test_rl_distributed.py.

The rollout is pre-generated: 2 prompts x 4 responses of the tiny model with fixed rewards. Rank r of N takes
prompts r*2/N.., computes log-probs, values and advantages (the statistics summed over the ranks) and runs the
update stage; the main rank saves the trained weights. Usage: rl_update_worker.py KIND OUT DEEPSPEED BATCH_SIZE
"""

import copy
import sys

import torch


def main(kind: str, out: str, deepspeed: str, batch_size: str) -> None:
    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.batch import ActorCritic
    from rlhfx.algos.rl.chord import Chord
    from rlhfx.algos.rl.dist import Ranks
    from rlhfx.algos.rl.loop import make_accelerator
    from rlhfx.algos.rl.rollout import RolloutStage
    from rlhfx.algos.rl.update import UpdateStage
    from rlhfx.algos.rl_math import AdaptiveKLController, RunningMoments
    from rlhfx.algos.rm import zero_new_head
    from rlhfx.arguments import parse_args
    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.models import load_causal_lm

    chord = kind == "chord"  # grpo with CHORD: both expert rows in one process, one on each of two
    kind = "grpo" if chord else kind
    argv = ["--rlhf_type", kind, "--n_samples_per_prompt", "4", "--batch_size", batch_size, "--rollout_batch_size", "2",
            "--micro_rollout_batch_size", "2", "--target_kl", "0.1", "--max_grad_norm", "0.5"]
    if chord:
        argv += [*CHORD, "--chord_enable_phi_function", "true", "--chord_sft_per_device_train_batch_size",
                 str(int(batch_size) // 4)]
    args = parse_args("rlhf", argv + (["--deepspeed", deepspeed] if deepspeed != "none" else []))
    config = resolve_config(args, kind)
    torch.manual_seed(0)
    path = str(tiny_model_path())
    policy = load_causal_lm(path, "float32")
    ref = copy.deepcopy(policy).eval()
    critic = None
    if config.uses_critic:
        critic = load_causal_lm(path, "float32", "sequence_classification")
        zero_new_head(critic, lambda *a: None)
    accelerator = make_accelerator(args, policy.config.hidden_size)
    ranks = Ranks(accelerator.process_index, accelerator.num_processes, accelerator.device)
    actor_critic = ActorCritic(policy, critic)
    kl = AdaptiveKLController(config.kl_coef, args.target_kl, args.kl_horizon)
    experts = Chord(config, EXPERT_ROWS, 0, args.seed, ranks) if chord else None
    updater = UpdateStage(accelerator, ranks, actor_critic, config, args, 1e-3, 1e-2, 10, kl, _off, ".", experts)
    stage = RolloutStage(args, config, None, None, actor_critic, ref, ranks, 0, _off, kl, RunningMoments())
    groups = fixed_groups()
    share = len(groups) // ranks.world
    batch, stats = stage.experience(groups[ranks.rank * share : (ranks.rank + 1) * share], 0)
    stats.update(updater.update(batch, args.batch_size, 0))
    state = {k: v for model in updater.models for k, v in accelerator.get_state_dict(model).items()}
    if ranks.is_main:
        torch.save({"weights": {k: v.detach().cpu() for k, v in state.items()}, "stats": stats, "kl_coef": kl.value}, out)
    ranks.barrier()


def _off():
    return torch.autocast("cpu", enabled=False)


# CHORD's expert rows (tokens, assistant mask): each has 3 labelled tokens, so the mean over one batch of both equals
# the mean of each one's mean (ms-swift's per-rank SFT loss, averaged over the ranks)
EXPERT_ROWS = [{"input_ids": [5, 6, 7, 10, 11, 12], "assistant_masks": [0, 0, 0, 1, 1, 1]},
               {"input_ids": [8, 9, 20, 21, 22], "assistant_masks": [0, 0, 1, 1, 1]}]
CHORD = ["--chord_sft_dataset", "demo-sft", "--chord_mu_warmup_steps", "0", "--chord_mu_decay_steps", "10",
         "--chord_mu_peak", "0.6", "--chord_mu_valley", "0.1"]  # mu = 0.6 at the first optimizer step


def fixed_groups() -> list[list[tuple]]:
    """2 prompts x 4 responses of different lengths; rewards that differ within each group."""
    prompts = [[5, 6, 7], [8, 9]]
    responses = [[[10, 11], [12, 13, 14, 15], [16], [17, 18, 19]], [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29, 30]]]
    rewards = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.25]]
    return [[(None, p, r, True, reward, 0.0, [0.0] * len(r), None) for r, reward in zip(rs, ws)]
            for p, rs, ws in zip(prompts, responses, rewards)]


if __name__ == "__main__":
    main(*sys.argv[1:])
