"""`--ray_address`: the online RL loop as a Ray driver over the roles' actors.

The loop is the one-process trainer's (rlhfx.algos.rl.loop: steps, logging, evaluation, checkpoints), on a driver
whose stages call the cluster: the engine actors generate, the reward workers (or the driver's reward functions)
score, the actor group and the reference compute log-probs (and the critic group values), the driver computes
advantages over the whole rollout (what torchrun's ranks get by summing their statistics), then the actor group
and the critic group update at once, each on its contiguous shares, and the engines get the new weights (actor
rank 0 broadcasts them over the weight-sync group). A checkpoint is the torchrun one: the policy, each actor rank's
training state (each critic rank's in train_state/critic/) and the driver's rl_state.pt, in checkpoint-N/ (on a
shared file system across nodes).
"""

from pathlib import Path

from rlhfx.algos.rl.batch import ActorCritic
from rlhfx.algos.rl.dist import Ranks
from rlhfx.algos.rl.loop import OnlineRLTrainer, pad_id
from rlhfx.algos.rl.ray.cluster import CRITIC_STATE, EngineGroup, RewardGroup, launch
from rlhfx.algos.rl.ray.placement import check_resources, connect, roles
from rlhfx.algos.rl.rollout import RolloutStage, reward_sources
from rlhfx.engines import stop_token_ids
from rlhfx.errors import RlhfxError


class RayRollout(RolloutStage):
    """The rollout stage with its forward passes on the actor group and the reference workers; the engine actors get
    the weights from the updater (and sleep and wake up on their own), so the driver pushes none."""

    pushes_weights = False

    def __init__(self, cluster, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cluster = cluster

    def __call__(self, rows: list[dict], step: int, all_rows: list[dict]):
        self.engine.start_step(step)
        return super().__call__(rows, step, all_rows)

    def forward_passes(self, batch: dict):
        return self.cluster.forward(batch)


class RayUpdater:
    """The update stage as the loop calls it: the actor and critic groups train, then the engines get the weights."""

    def __init__(self, cluster, kl):
        self.cluster, self.kl, self.learning_rate = cluster, kl, 0.0

    def update(self, batch: dict, train_batch: int, step: int) -> dict:
        stats = self.cluster.update(batch, train_batch, step, self.kl.value)
        self.learning_rate = stats.pop("learning_rate")
        self.cluster.sync_weights()
        return stats


class RayRLTrainer(OnlineRLTrainer):
    def __init__(self, ctx, config):
        from transformers import set_seed

        ray = connect(config.ray_address)
        gpu = check_resources(config, ray.cluster_resources())  # checked before loading too (check_args)
        world = next(role.processes for role in roles(config) if role.name == "actor")
        self._plan(ctx, config, Ranks(), world)
        args, tokenizer = self.args, self.tokenizer
        self.model = ctx.model  # on the meta device (model_skeleton): the weights are the actor group's
        self.actor_critic = ActorCritic(None, None)
        stops = stop_token_ids(tokenizer, getattr(ctx.model, "generation_config", None), ctx.encoder.template)
        self.cluster = cluster = launch(ray, config, args, gpu, stops, self.total_updates, ctx.hf_args["learning_rate"],
                                        str(self.output_dir), ctx.peft_config)
        self.engine = EngineGroup(ray, cluster.engines, stops, args.seed)
        self.rewards = (RewardGroup(ray, cluster.rewards) if cluster.rewards
                        else reward_sources(args, config, self.device))
        self.updater = RayUpdater(cluster, self.kl)
        self.ref_model = None
        self.rollout = RayRollout(cluster, args, config, self.engine, self.rewards, self.actor_critic, None, self.ranks,
                                  pad_id(tokenizer, stops), self._mixed_precision, self.kl, self.reward_moments,
                                  self.output_dir / "completions.jsonl" if config.log_completions else None)
        cluster.sync_weights()  # the engines start from the actor group's policy (a LoRA adapter merged)
        set_seed(args.seed)

    def _learning_rate(self) -> float:
        return self.updater.learning_rate

    def _check_finite_weights(self) -> None:
        """Each rank of both groups checks its own weights after its update (rlhfx.algos.rl.ray.workers)."""

    def _save_policy(self, folder: str) -> None:
        self.cluster.on_actors("save_policy", folder)

    def _save_train_state(self, folder: Path) -> None:
        self.cluster.train_state("save_state", str(folder))

    def _load_train_state(self, folder: Path) -> None:
        check_critic_ranks(folder, len(self.cluster.critics))
        self.cluster.train_state("load_state", str(folder))
        self.cluster.sync_weights()

    def save_model(self, folder: str) -> None:
        super().save_model(folder)
        self.cluster.close()
        self.cluster.ray.shutdown()


def check_critic_ranks(train_state: Path, ranks: int) -> None:
    """The checkpoint's critic group had `ranks` ranks (accelerate keeps a random_states_N.pkl per rank): each rank's
    optimizer shard and random state belong to its own rank, and a torchrun checkpoint has no critic group."""
    saved = len(list((train_state / CRITIC_STATE).glob("random_states_*.pkl")))
    if saved != ranks:
        raise RlhfxError(f"{train_state.parent} holds the training state of {saved} critic ranks (Ray's critic group; "
                         f"none in a torchrun checkpoint), and this run's critic group has {ranks}.",
                         "resume with the --critic_num_nodes x --critic_num_gpus_per_node of the run that saved it, or "
                         "a torchrun checkpoint under torchrun.")
