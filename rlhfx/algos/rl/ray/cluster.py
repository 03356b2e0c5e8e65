"""The roles started as Ray actors on their placement groups, and what the driver calls on them.

Each role with slots of its own gets a placement group (rlhfx.algos.rl.ray.placement); a colocated role's
processes go onto the bundles of the role it shares one to one. A batch is split over a role's processes in
contiguous equal shares (the actor group's as torchrun's ranks split a rollout) and the answers are joined in order.
The actor group trains the policy and the critic group (gae) the critic, side by side on the same rollout. Actor
rank 0 and the engines' processes also form the weight-sync group (rlhfx.engines.weight_sync), over which rank 0
broadcasts the policy after every update.
"""

import math
from dataclasses import dataclass

import torch

from rlhfx.algos.rl.batch import select
from rlhfx.algos.rl.ray.placement import placement_group, roles
from rlhfx.algos.rl.ray.workers import ActorWorker, CriticWorker, EngineWorker, RefWorker, RewardWorker
from rlhfx.algos.rl.update import shuffle
from rlhfx.engines import Engine

CRITIC_STATE = "critic"  # the critic group's training state, inside a checkpoint's train_state/


def shares(n: int, parts: int) -> list[list[int]]:
    """0..n-1 cut into `parts` contiguous runs of near-equal size (the first ones one longer)."""
    size, extra = divmod(n, parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [list(range(bounds[i], bounds[i + 1])) for i in range(parts)]


def _cpu(batch: dict) -> dict:
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _split(batch: dict, parts: int) -> list[dict]:
    """The batch's contiguous shares of `parts` processes (none for a role without any: no critic group)."""
    return [select(batch, rows) for rows in shares(batch["mask"].shape[0], parts)] if parts else []


@dataclass
class Cluster:
    ray: object
    config: object
    seed: int
    actors: list  # the actor group's ranks, rank 0 first
    critics: list  # the critic group's ranks (empty without a critic)
    refs: list
    rewards: list  # empty: the reward functions run in the driver
    engines: list
    groups: list  # the placement groups
    specs: list | None = None  # the names, dtypes and shapes of the policy's weights, read at the first sync

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Old log-probs from the actor group, reference log-probs and the critic group's values, side by side."""
        cpu = _cpu(batch)
        calls = [[getattr(worker, method).remote(part) for worker, part in zip(workers, _split(cpu, len(workers)))]
                 for workers, method in ((self.actors, "forward"), (self.refs, "logp"), (self.critics, "forward"))]
        old, ref, values = (self.ray.get(group) for group in calls)
        device = batch["mask"].device
        return (torch.cat(old).to(device), torch.cat(ref).to(device),
                torch.cat(values).to(device) if values else None)

    def update(self, batch: dict, train_batch: int, step: int, kl_coef: float) -> dict:
        """The actor group's policy update and the critic group's value update at once (both sent before either is
        awaited). Each rank follows the sample order the driver sends (`orders`), so actor rank r and critic rank r
        visit their shares in one order whenever the groups have as many ranks, as one process's policy and critic
        do. A critic group of another size takes as many optimizer steps as the actor group, on batches of its
        share's size over that count (the same global batch when the sizes divide evenly)."""
        cpu = _cpu(batch)
        steps = math.ceil(cpu["mask"].shape[0] // len(self.actors) / train_batch)  # an actor rank's, per epoch
        policy = [actor.update.remote(part, train_batch, step, self.orders(len(part["mask"]), step, rank), kl_coef)
                  for rank, (actor, part) in enumerate(zip(self.actors, _split(cpu, len(self.actors))))]
        critic = [worker.update.remote(part, math.ceil(len(part["mask"]) / steps), step,
                                       self.orders(len(part["mask"]), step, rank))
                  for rank, (worker, part) in enumerate(zip(self.critics, _split(cpu, len(self.critics))))]
        return {**self.ray.get(policy)[0], **(self.ray.get(critic)[0] if critic else {})}

    def orders(self, n: int, step: int, rank: int) -> list[list[int]]:
        """The order of each epoch over a rank's `n` samples, seeded by (seed, step, rank): the same for both groups'
        rank r, and for a resumed run as for an uninterrupted one."""
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * (step + 1) + rank)
        return [shuffle(n, self.config, generator) for _ in range(self.config.num_ppo_epochs)]

    def sync_weights(self) -> None:
        """The actor group's policy weights into every engine: rank 0 broadcasts them tensor by tensor over the
        weight-sync group, and each engine process loads each one as it arrives."""
        if self.specs is None:
            self.specs = self.ray.get([a.weight_specs.remote() for a in self.actors])[0]
        self.ray.get([a.send_weights.remote() for a in self.actors] +
                     [e.receive_weights.remote(self.specs) for e in self.engines])

    def on_actors(self, method: str, *args) -> None:
        self.ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def train_state(self, method: str, folder: str) -> None:
        """save_state / load_state on both groups at once: the actor group's in `folder`, the critic group's in
        its critic/ folder."""
        self.ray.get([getattr(a, method).remote(folder) for a in self.actors] +
                     [getattr(c, method).remote(f"{folder}/{CRITIC_STATE}") for c in self.critics])

    def close(self) -> None:
        """Every actor ended and every placement group's resources given back."""
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors + self.critics + self.refs + self.rewards + self.engines:
            self.ray.kill(actor)
        for group in self.groups:
            remove_placement_group(group)


class EngineGroup(Engine):
    """The engine actors as one Engine: the prompts split over them, the completions joined in order. Each call
    samples with a seed fixed by (seed, step, call of the step, engine), so a resumed run samples what an
    uninterrupted one does (the engines' random states live in their own processes, outside any checkpoint)."""

    name = "ray"

    def __init__(self, ray, engines: list, stop_ids: list[int], seed: int):
        self.ray, self.engines, self.stop_ids, self.seed = ray, engines, stop_ids, seed
        self.step, self.calls = 0, 0

    def start_step(self, step: int) -> None:
        self.step, self.calls = step, 0

    def generate(self, prompts, sampling):
        from dataclasses import replace

        base = self.seed + 1_000_003 * (self.step + 1) + 1009 * self.calls
        self.calls += 1
        parts = [rows for rows in shares(len(prompts), len(self.engines)) if rows]
        calls = [e.generate.remote([prompts[i] for i in rows], replace(sampling, seed=base + i))
                 for i, (e, rows) in enumerate(zip(self.engines, parts))]
        return [completions for part in self.ray.get(calls) for completions in part]


class RewardGroup:
    """The reward workers as one reward source: the samples split over them."""

    def __init__(self, ray, workers: list):
        self.ray, self.workers = ray, workers

    def __call__(self, samples: list) -> list[float]:
        parts = [rows for rows in shares(len(samples), len(self.workers)) if rows]
        calls = [w.score.remote([samples[i] for i in rows]) for w, rows in zip(self.workers, parts)]
        return [reward for part in self.ray.get(calls) for reward in part]


def launch(ray, config, args, gpu: bool, stops: list[int], total_updates: int, learning_rate: float,
           output_dir: str, peft_config=None) -> Cluster:
    """Every role's actors on its placement group; the actor group and the critic group (gae) set up as a
    data-parallel group each, with a rendezvous of its own. `peft_config`: the driver's LoRA config (the critic's
    adapter takes its target modules, as in one process)."""
    from collections import Counter

    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    cpus = config.ray_cpus_per_slot
    plan = {role.name: role for role in roles(config)}
    groups = {name: placement_group(ray, role.slots, gpu, cpus, role.per_process)
              for name, role in plan.items() if role.slots}
    sharing = Counter(role.on for role in plan.values())  # processes on each bundle of a placement group

    def place(cls, name: str, index: int, *init):
        role = plan[name]
        share = role.per_process / sharing[role.on]  # of a slot
        strategy = PlacementGroupSchedulingStrategy(groups[role.on], placement_group_bundle_index=index)
        options = {"num_cpus": _down(cpus * share), "num_gpus": _down(share) if gpu else 0,
                   "scheduling_strategy": strategy}
        return ray.remote(cls).options(**options).remote(*init)

    def data_parallel(cls, name: str, *setup) -> tuple[list, list]:
        world = plan[name].processes if name in plan else 0
        workers = [place(cls, name, rank, args, config, rank, world) for rank in range(world)]
        master = ray.get(workers[0].address.remote()) if workers else None
        return workers, [w.setup.remote(master, total_updates, output_dir, *setup) for w in workers]

    actors, ready = data_parallel(ActorWorker, "actor", learning_rate)
    critics, critic_ready = data_parallel(CriticWorker, "critic", config.critic_learning_rate or learning_rate,
                                          peft_config)
    refs = [place(RefWorker, "ref", i, args, config) for i in range(plan["ref"].processes)]
    rewards = [place(RewardWorker, "reward", i, args, config) for i in range(plan["reward"].processes)] \
        if "reward" in plan else []
    engines = [place(EngineWorker, "engine", i, args, config, stops) for i in range(plan["engine"].processes)]
    ray.get(ready + critic_ready)
    _join_weight_group(ray, config, gpu, actors[0], engines)
    return Cluster(ray, config, args.seed, actors, critics, refs, rewards, engines, list(groups.values()))


def sync_backend(config, gpu: bool) -> str:
    """The weight-sync group's backend: --vllm_sync_backend, else nccl between GPUs; gloo on CPU slots, and with
    --colocate_all_models (NCCL refuses two ranks on one GPU, and engine i shares actor rank i's)."""
    return config.vllm_sync_backend or ("nccl" if gpu and not config.colocate_all_models else "gloo")


def _join_weight_group(ray, config, gpu: bool, rank0, engines: list) -> None:
    """Actor rank 0 as rank 0 of the weight-sync group (rlhfx.engines.weight_sync), engine i's tensor-parallel
    worker j as rank 1 + i * tp + j."""
    tp = config.vllm_tensor_parallel_size if config.engine == "vllm" else 1
    host, port = ray.get(rank0.address.remote())
    world, backend = 1 + len(engines) * tp, sync_backend(config, gpu)
    ray.get([rank0.join_weight_group.remote(host, port, world, backend)] +
            [e.join_weight_group.remote(host, port, 1 + i * tp, world, backend) for i, e in enumerate(engines)])


def _down(amount: float) -> float:
    """`amount` rounded down to Ray's resource unit (1e-4): three thirds of a slot, each rounded up, would ask for
    more than the slot holds and never be scheduled."""
    return math.floor(amount * 10_000) / 10_000
