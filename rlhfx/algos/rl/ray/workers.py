"""The processes of each role, run as Ray actors (rlhfx.algos.rl.ray.cluster makes them remote and places them).

ActorWorker is one rank of the actor group: the environment torchrun would give it (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK) is set before accelerate starts, so the ranks form the same DDP / DeepSpeed group and
run the same update stage (rlhfx.algos.rl.update) as under torchrun; with gae each rank also trains its critic,
as there. The reference, reward and engine workers hold their model and answer the driver's calls. Batches travel
through Ray's object store (CPU tensors); new policy weights go from the actor group's rank 0 to the engines over a
weight-sync group of their own (rlhfx.engines.weight_sync), tensor by tensor.
"""

import os
from pathlib import Path

import torch

from rlhfx.algos.rl.rollout import logp, per_micro


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(batch: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _cpu(tensor):
    return None if tensor is None else tensor.detach().cpu()


class ActorWorker:
    def __init__(self, args, config, rank: int, world: int):
        self.args, self.config, self.rank, self.world = args, config, rank, world

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the group's rendezvous: this node and a free port."""
        import socket

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def setup(self, master: tuple[str, int], total_updates: int, learning_rate: float, output_dir: str) -> None:
        from transformers import set_seed

        from rlhfx.algos import rl_math
        from rlhfx.algos.rl.batch import ActorCritic
        from rlhfx.algos.rl.dist import Ranks
        from rlhfx.algos.rl.loop import critic_model, make_accelerator, mixed_precision, policy_model
        from rlhfx.algos.rl.update import UpdateStage
        from rlhfx.models import load_policy, lora_config

        args, config = self.args, self.config
        os.environ.update(MASTER_ADDR=master[0], MASTER_PORT=str(master[1]), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")  # Ray shows each one device
        loaded = load_policy(args)
        self.accelerator = make_accelerator(args, loaded.model.config.hidden_size)
        self.ranks = Ranks(self.accelerator.process_index, self.accelerator.num_processes, self.accelerator.device)
        device = self.accelerator.device
        peft = lora_config(args, loaded.model, loaded.model_type, head_trains=True)  # the RL loss runs the head's forward
        self.policy = policy_model(args, loaded.model, peft, device)
        self.critic = critic_model(args, config, peft, device) if config.uses_critic else None
        self.autocast = lambda: mixed_precision(device, args)
        self.kl = rl_math.AdaptiveKLController(config.kl_coef, None, config.kl_horizon)  # the driver sends its value
        self.output_dir = Path(output_dir)
        self.stage = UpdateStage(self.accelerator, self.ranks, ActorCritic(self.policy, self.critic), config, args,
                                 learning_rate, config.critic_learning_rate or learning_rate, total_updates, self.kl,
                                 self.autocast, self.output_dir)
        set_seed(args.seed + self.rank)  # the update's shuffles, as a torchrun rank's

    def forward(self, batch: dict) -> tuple:
        """(log-probs, values or None) of this rank's share of the rollout."""
        from rlhfx.algos.rl.batch import inputs, response_values

        batch, size = _to(batch, self.accelerator.device), self.config.micro_rollout_batch_size
        with torch.no_grad():
            old = per_micro(lambda micro: logp(self.policy, micro, self.config.temperature), batch, size, self.autocast)
            values = None if self.critic is None else per_micro(
                lambda micro: response_values(self.critic, **inputs(micro)), batch, size, self.autocast)
        return _cpu(old), _cpu(values)

    def update(self, batch: dict, train_batch: int, step: int, kl_coef: float) -> dict:
        from rlhfx.training.checkpoints import newest_checkpoint
        from rlhfx.training.guards import check_finite_weights

        self.kl.value = kl_coef
        stats = self.stage.update(_to(batch, self.accelerator.device), train_batch, step)
        stats["learning_rate"] = self.stage.scheduler.get_last_lr()[0]
        for model in (self.policy, self.critic):
            if model is not None:
                check_finite_weights(model, step + 1, stats["learning_rate"], newest_checkpoint(self.output_dir))
        return stats

    def weight_specs(self) -> list | None:
        """The names, dtypes and shapes of what send_weights sends (rank 0's; every rank takes part under ZeRO-3)."""
        from rlhfx.algos.rl.rollout import policy_weights
        from rlhfx.engines.weight_sync import specs

        mine = specs(policy_weights(self.policy))
        return mine if self.rank == 0 else None

    def join_weight_group(self, host: str, port: int, world: int, backend: str) -> None:
        """Rank 0 only: the weight-sync group's rank 0, serving its rendezvous at host:port (its `address()`)."""
        from rlhfx.engines.weight_sync import WeightGroup

        self.weight_group = WeightGroup(host, port, 0, world, backend)

    def send_weights(self) -> None:
        """The policy's weights under their Hugging Face names, broadcast by rank 0 one by one (the other ranks read
        them too: under ZeRO-3 each is gathered by all ranks together)."""
        from rlhfx.algos.rl.rollout import policy_weights

        weights = policy_weights(self.policy)
        if self.rank == 0:
            self.weight_group.send(weights)
        else:
            for _ in weights:
                pass

    def save_policy(self, folder: str) -> None:
        """The policy in Hugging Face format (written by rank 0; gathered by all under ZeRO-3)."""
        from rlhfx.algos.rl.loop import save_policy

        save_policy(self.accelerator, self.stage, self.policy, self.ranks, folder)

    def save_state(self, folder: str) -> None:
        self.accelerator.save_state(folder, safe_serialization=False)

    def load_state(self, folder: str) -> None:
        self.accelerator.load_state(folder)


class RefWorker:
    """The reference model: --ref_model, else --model as loaded (with LoRA: the base the adapter trains on)."""

    def __init__(self, args, config):
        from rlhfx.models import load_causal_lm, load_policy, resolve_model_path

        self.config, device = config, _device()
        model = (load_causal_lm(resolve_model_path(args.ref_model, None), args.torch_dtype, args=args)
                 if args.ref_model else load_policy(args).model)
        self.model = model.to(device).eval().requires_grad_(False)

    def logp(self, batch: dict) -> torch.Tensor:
        from contextlib import nullcontext

        batch = _to(batch, self.model.device)
        with torch.no_grad():
            return _cpu(per_micro(lambda micro: logp(self.model, micro, self.config.temperature), batch,
                                  self.config.micro_rollout_batch_size, nullcontext))


class RewardWorker:
    """The reward sources (the --reward_model classifiers with the functions and URLs, weighted as the flags say)."""

    def __init__(self, args, config):
        from rlhfx.algos.rl.rollout import reward_sources

        self.rewards = reward_sources(args, config, _device())

    def score(self, samples: list) -> list[float]:
        return self.rewards(samples)


class EngineWorker:
    """A rollout engine on its own copy of the policy, which the driver replaces after every update (the driver
    seeds each call: rlhfx.algos.rl.ray.cluster.EngineGroup). The engine is the one the colocated path builds
    (make_rollout_engine): pt on a loaded policy, or vllm (--engine vllm), which loads --model itself and, as
    colocated, wakes up for the weights and the rollout and sleeps after it (--sleep_level; GPU only)."""

    def __init__(self, args, config, stops: list[int]):
        from rlhfx.algos.rl.dist import Ranks
        from rlhfx.algos.rl.rollout import make_rollout_engine
        from rlhfx.models import load_policy, load_tokenizer, resolve_model

        self.vllm = config.engine == "vllm"
        if self.vllm:
            tokenizer, model = load_tokenizer(resolve_model(args.model, args.model_type).tokenizer_path), None
        else:
            loaded = load_policy(args)
            tokenizer, model = loaded.tokenizer, loaded.model.to(_device()).eval()
        self.engine = make_rollout_engine(args, config, tokenizer, model, stops, Ranks())

    def generate(self, prompts: list[list[int]], sampling) -> list:
        completions = self.engine.generate(prompts, sampling)
        if self.vllm:
            self.engine.sleep()
        return completions

    def join_weight_group(self, host: str, port: int, first_rank: int, world: int, backend: str) -> None:
        """Joins the weight-sync group: a vllm engine's every worker (first_rank + its tensor-parallel rank), a pt
        engine as first_rank."""
        from rlhfx.engines.weight_sync import WeightGroup

        if self.vllm:
            self.engine.join_weight_group(host, port, first_rank, world, backend)
        else:
            self.weight_group = WeightGroup(host, port, first_rank, world, backend)

    def receive_weights(self, specs: list) -> None:
        """The weights rank 0 broadcasts, loaded as they arrive (a pt engine's straight into its model)."""
        if self.vllm:
            self.engine.wake_up()
            self.engine.receive_weights(specs)
        else:
            self.engine.update_weights(self.weight_group.receive(specs))
