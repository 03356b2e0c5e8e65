"""`--rlhf_type ppo | grpo | rloo | reinforce_pp`: rlhfx's own online RL trainer (TRL 1.16 has no PPO).

One trainer covers every `--advantage_estimator`; grpo, rloo and reinforce_pp are presets of it (their options in
rlhfx.algos.options change defaults only; config.py folds and checks them).
The stages: rollout.py (engine -> samples -> log-probs, values, rewards -> advantages), the estimator
(rlhfx.algos.rl_math, pure; ALGORITHMS.md "Online RL"), update.py (PPO epochs on accelerate: DDP or DeepSpeed),
and loop.py (the thin loop: steps, logging, evaluation, checkpoints). Under torchrun every rank rolls out its
share of the prompts and every statistic is all-reduced (dist.py), so the numbers do not depend on the world size.
"""

from rlhfx.algos.rl.config import check_args, resolve_config  # noqa: F401  (check_args: the Algorithm record calls it)


def build_trainer(ctx):
    if ctx.options.ray_address:  # the roles as Ray actors, this process their driver (rlhfx.algos.rl.ray)
        from rlhfx.algos.rl.ray.trainer import RayRLTrainer

        return RayRLTrainer(ctx, ctx.options)
    from rlhfx.algos.rl.loop import OnlineRLTrainer

    return OnlineRLTrainer(ctx, ctx.options)
