"""The processes of each role, run as Ray actors (rlhfx.algos.rl.ray.cluster makes them remote and places them).

ActorWorker is one rank of the actor group (the policy), CriticWorker one rank of the critic group (gae): the
environment torchrun would give it (MASTER_ADDR/PORT of its group's rank 0, RANK, WORLD_SIZE, LOCAL_RANK) is set
before accelerate starts, so each group's ranks form a DDP / DeepSpeed group of their own and run the update stage
(rlhfx.algos.rl.update) the torchrun trainer runs, on their one model. The reference, reward and engine workers
hold their model and answer the driver's calls. Batches travel through Ray's object store (CPU tensors); new policy
weights go from the actor group's rank 0 to the engines over a weight-sync group of their own
(rlhfx.engines.weight_sync), tensor by tensor.
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


class TrainWorker:
    """One rank of a trained group: its rendezvous, its update stage's training state and its weights' check."""

    def __init__(self, args, config, rank: int, world: int):
        self.args, self.config, self.rank, self.world = args, config, rank, world

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the group's rendezvous: this node and a free port."""
        import socket

        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def _start(self, master: tuple[str, int], hidden_size: int, output_dir: str) -> None:
        from rlhfx.algos import rl_math
        from rlhfx.algos.rl.dist import Ranks
        from rlhfx.algos.rl.loop import make_accelerator, mixed_precision

        os.environ.update(MASTER_ADDR=master[0], MASTER_PORT=str(master[1]), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")  # Ray shows each one device
        self.accelerator = make_accelerator(self.args, hidden_size)
        self.ranks = Ranks(self.accelerator.process_index, self.accelerator.num_processes, self.accelerator.device)
        self.autocast = lambda: mixed_precision(self.accelerator.device, self.args)
        self.kl = rl_math.AdaptiveKLController(self.config.kl_coef, None, self.config.kl_horizon)  # the driver's value
        self.output_dir = Path(output_dir)

    def _stage(self, actor_critic, learning_rate: float, total_updates: int) -> None:
        from rlhfx.algos.rl.update import UpdateStage

        self.stage = UpdateStage(self.accelerator, self.ranks, actor_critic, self.config, self.args, learning_rate,
                                 learning_rate, total_updates, self.kl, self.autocast, self.output_dir)

    def _update(self, model, batch: dict, train_batch: int, step: int, orders: list) -> dict:
        """The stage's update on this rank's share in the driver's sample order, then the weights checked."""
        from rlhfx.training.checkpoints import newest_checkpoint
        from rlhfx.training.guards import check_finite_weights

        stats = self.stage.update(_to(batch, self.accelerator.device), train_batch, step, orders)
        check_finite_weights(model, step + 1, self.stage.scheduler.get_last_lr()[0], newest_checkpoint(self.output_dir))
        return stats

    def save_state(self, folder: str) -> None:
        self.accelerator.save_state(folder, safe_serialization=False)

    def load_state(self, folder: str) -> None:
        self.accelerator.load_state(folder)


class ActorWorker(TrainWorker):
    def setup(self, master: tuple[str, int], total_updates: int, output_dir: str, learning_rate: float) -> None:
        from rlhfx.algos.rl.batch import ActorCritic
        from rlhfx.algos.rl.loop import policy_model
        from rlhfx.models import load_policy, lora_config

        loaded = load_policy(self.args)
        self._start(master, loaded.model.config.hidden_size, output_dir)
        peft = lora_config(self.args, loaded.model, loaded.model_type, head_trains=True)  # the loss runs the head
        self.policy = policy_model(self.args, loaded.model, peft, self.accelerator.device)
        self._stage(ActorCritic(self.policy, None), learning_rate, total_updates)

    def forward(self, batch: dict) -> torch.Tensor:
        """The log-probs of this rank's share of the rollout."""
        batch = _to(batch, self.accelerator.device)
        with torch.no_grad():
            return _cpu(per_micro(lambda micro: logp(self.policy, micro, self.config.temperature), batch,
                                  self.config.micro_rollout_batch_size, self.autocast))

    def update(self, batch: dict, train_batch: int, step: int, orders: list, kl_coef: float) -> dict:
        self.kl.value = kl_coef
        stats = self._update(self.policy, batch, train_batch, step, orders)
        return {**stats, "learning_rate": self.stage.scheduler.get_last_lr()[0]}

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


class CriticWorker(TrainWorker):
    """A rank of the critic group: the critic one process builds (rlhfx.algos.rl.loop.critic_model), its values
    and its value-loss update (--critic_learning_rate, its own optimizer, scheduler and --max_grad_norm clipping)."""

    def setup(self, master: tuple[str, int], total_updates: int, output_dir: str, learning_rate: float,
              peft_config) -> None:
        from rlhfx.algos.rl.batch import ActorCritic
        from rlhfx.algos.rl.loop import critic_model

        self.critic = critic_model(self.args, self.config, peft_config, _device())
        self._start(master, self.critic.config.hidden_size, output_dir)
        self._stage(ActorCritic(None, self.critic), learning_rate, total_updates)

    def forward(self, batch: dict) -> torch.Tensor:
        """The values of this rank's share of the rollout."""
        from rlhfx.algos.rl.batch import inputs, response_values

        batch = _to(batch, self.accelerator.device)
        with torch.no_grad():
            return _cpu(per_micro(lambda micro: response_values(self.critic, **inputs(micro)), batch,
                                  self.config.micro_rollout_batch_size, self.autocast))

    def update(self, batch: dict, train_batch: int, step: int, orders: list) -> dict:
        return self._update(self.critic, batch, train_batch, step, orders)


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
