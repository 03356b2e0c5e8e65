"""Where each role runs: OpenRLHF's placement flags made placement groups, checked against the cluster first.

A role's processes sit on a placement group of "slots" (one bundle each, packed onto as few nodes as fit): a slot is
one GPU plus --ray_cpus_per_slot CPUs on a cluster with GPUs, and --ray_cpus_per_slot CPUs alone without, so a
placement written for GPUs runs unchanged on a laptop. Colocated roles share another role's slots one to one
(--colocate_actor_ref: the reference on the actor group's, --colocate_critic_reward: the critic on the reward
models', --colocate_all_models: every role on the actor group's), each process taking an equal share of its slot
(OpenRLHF gives each a fraction of the GPU likewise). `check_placement` runs as the options are resolved; `connect` before any model loads.
"""

from dataclasses import dataclass

from rlhfx.errors import RlhfxError

PLACEMENT = ("ray_cpus_per_slot", "actor_num_nodes", "actor_num_gpus_per_node", "critic_num_nodes",
             "critic_num_gpus_per_node", "ref_num_nodes", "ref_num_gpus_per_node", "reward_num_nodes",
             "reward_num_gpus_per_node", "vllm_num_engines", "colocate_actor_ref", "colocate_all_models",
             "colocate_critic_reward")
RAY_EXTRA = "pip install 'rlhfx[ray]'"


@dataclass
class Role:
    name: str
    processes: int  # Ray actors of the role
    on: str  # the role whose placement group holds its processes: its own name, or the role it is colocated with
    per_process: int = 1  # slots of each process: an engine's --vllm_tensor_parallel_size (one bundle), else one

    @property
    def slots(self) -> int:
        """Slots of its own placement group (0: it shares another role's)."""
        return self.processes * self.per_process if self.on == self.name else 0


def roles(config) -> list[Role]:
    """The run's roles: the actor group (the policy's data-parallel ranks), the critic group (gae only: its own
    data-parallel ranks), the reference, the reward models (only with --reward_model; reward functions run in the
    driver) and the rollout engines."""
    together = config.colocate_all_models
    out = [Role("actor", config.actor_num_nodes * config.actor_num_gpus_per_node, "actor")]
    if config.uses_critic:
        out.append(Role("critic", critic_slots(config), critic_host(config)))
    out.append(Role("ref", config.ref_num_nodes * config.ref_num_gpus_per_node,
                    "actor" if together or config.colocate_actor_ref else "ref"))
    if config.reward_model:
        out.append(Role("reward", config.reward_num_nodes * config.reward_num_gpus_per_node,
                        "actor" if together else "reward"))
    out.append(Role("engine", config.vllm_num_engines, "actor" if together else "engine",
                    config.vllm_tensor_parallel_size))
    return out


def critic_host(config) -> str:
    """The role whose slots the critic group sits on: the actor's (--colocate_all_models), the reward models'
    (--colocate_critic_reward), else its own."""
    return "actor" if config.colocate_all_models else "reward" if config.colocate_critic_reward else "critic"


def critic_slots(config) -> int:
    """The critic group's ranks: --critic_num_nodes x --critic_num_gpus_per_node, each not given taking the count
    of the group it shares (the reward models' with --colocate_critic_reward), else the actor group's (a separate
    group as large as the actor's, as a user of a large model expects, rather than OpenRLHF's 1 x 8 default)."""
    like = "reward" if critic_host(config) == "reward" else "actor"
    nodes, per_node = (getattr(config, f"critic_{count}") or getattr(config, f"{like}_{count}")
                       for count in ("num_nodes", "num_gpus_per_node"))
    return nodes * per_node


def check_placement(config, explicit: set) -> None:
    """The placement flags' own consistency (no cluster needed): given only with --ray_address, positive counts,
    colocated roles as large as the group whose slots they share."""
    given = sorted(name for name in PLACEMENT if name in explicit)
    if config.vllm_sync_backend and not config.ray_address:
        raise RlhfxError("--vllm_sync_backend sets how Ray's engine actors get new weights, but this run has no "
                         "--ray_address.", "drop it (a vLLM engine in the trainer's process takes the weights "
                         "directly), or add --ray_address.")
    if not config.ray_address:
        if given:
            raise RlhfxError(f"--{given[0]} places a role on a Ray cluster, but this run has no --ray_address.",
                             "add --ray_address local (a Ray cluster on this machine), auto or HOST:PORT, or drop it "
                             "(under torchrun every rank holds every role).")
        return
    for name in PLACEMENT[1:10]:
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise RlhfxError(f"--{name} is {getattr(config, name)}.", "use a positive number.")
    if not config.ray_cpus_per_slot > 0:
        raise RlhfxError(f"--ray_cpus_per_slot is {config.ray_cpus_per_slot}.", "use a positive number (e.g. 1).")
    for name, what in (("chord_sft_dataset", "CHORD's expert batches are"), ("multi_turn_scheduler",
                       "multi-turn rollouts are"), ("offload_model", "moving the policy to the CPU while vLLM generates "
                       "is"), ("offload_optimizer", "moving the optimizer states to the CPU while vLLM generates is")):
        if getattr(config, name):
            raise RlhfxError(f"--{name} with --ray_address: {what} in the torchrun trainer only, so far.",
                             f"drop --ray_address (NPROC_PER_NODE=N rlhfx rlhf ... scales it over GPUs), or --{name}.")
    if config.vllm_mode == "server":
        raise RlhfxError("--vllm_mode server with --ray_address: the Ray placement starts its own engine actors.",
                         "drop --vllm_mode server (--engine vllm runs vLLM in the engine actors), or --ray_address.")
    if config.vllm_tensor_parallel_size > 1 and config.colocate_all_models:
        raise RlhfxError(f"--colocate_all_models with --vllm_tensor_parallel_size {config.vllm_tensor_parallel_size}: "
                         "an engine actor holds its tensor-parallel GPUs in one bundle of its own, but the actor "
                         "group's bundles are one GPU each (an engine spanning several is not there yet).",
                         "drop --colocate_all_models (the engines get their own placement group), or use "
                         "--vllm_tensor_parallel_size 1.")
    if config.vllm_sync_backend == "nccl" and config.colocate_all_models:
        raise RlhfxError("--vllm_sync_backend nccl with --colocate_all_models: engine i shares actor rank i's GPU, "
                         "and NCCL refuses two ranks of one group on one GPU.",
                         "drop --vllm_sync_backend (gloo is the default then), or --colocate_all_models.")
    critic = {"critic_num_nodes", "critic_num_gpus_per_node"} & explicit
    if not config.uses_critic and (critic or config.colocate_critic_reward):
        flags = "--colocate_critic_reward places" if config.colocate_critic_reward else "the --critic_num_* flags place"
        raise RlhfxError(f"--advantage_estimator {config.advantage_estimator} trains no critic, so {flags} nothing.",
                         f"drop {'it' if config.colocate_critic_reward else 'them'}, or use --rlhf_type ppo (gae).")
    if config.colocate_critic_reward and not config.reward_model:
        raise RlhfxError("--colocate_critic_reward puts the critic group on the reward model group's slots, but this "
                         "run has no --reward_model (reward functions run in the driver).",
                         "drop --colocate_critic_reward (the critic gets slots of its own), or add --reward_model.")
    if not config.reward_model and {"reward_num_nodes", "reward_num_gpus_per_node"} & explicit:
        raise RlhfxError("--reward_num_* place the reward models, but this run has no --reward_model (reward functions "
                         "run in the driver).", "drop them, or add --reward_model.")
    placed = {role.name: role for role in roles(config)}
    for role in placed.values():
        host = placed[role.on]
        size = role.processes * role.per_process
        if role.on != role.name and size != host.slots:
            flag = ("--colocate_all_models" if config.colocate_all_models else
                    "--colocate_critic_reward" if role.name == "critic" else "--colocate_actor_ref")
            raise RlhfxError(f"{flag}: the {role.name} role asks for {size} slots, the {host.name} group has "
                             f"{host.slots}; colocated roles share the {host.name} group's slots one to one.",
                             f"give the {role.name} role {host.slots} slots (its --*_num_nodes x --*_num_gpus_per_node, "
                             "or --vllm_num_engines x --vllm_tensor_parallel_size), or drop the colocation flag.")
    slots = placed["actor"].slots
    if config.rollout_batch_size % slots:
        raise RlhfxError(f"--rollout_batch_size {config.rollout_batch_size} prompts do not split evenly over the actor "
                         f"group's {slots} ranks.", f"use a multiple of {slots}.")
    samples = config.rollout_batch_size * config.n_samples_per_prompt
    if "critic" in placed and samples % placed["critic"].processes:
        raise RlhfxError(f"The rollout's {samples} samples (--rollout_batch_size x --n_samples_per_prompt) do not split "
                         f"evenly over the critic group's {placed['critic'].processes} ranks.",
                         "give the critic group a number of ranks that divides them (--critic_num_nodes x "
                         "--critic_num_gpus_per_node), or change --rollout_batch_size.")


def demand(config, gpu: bool) -> dict[str, dict[str, float]]:
    """Per role with its own slots: the CPUs (and GPUs) its placement group reserves."""
    per_slot = {"CPU": config.ray_cpus_per_slot, **({"GPU": 1} if gpu else {})}
    return {role.name: {key: value * role.slots for key, value in per_slot.items()} for role in roles(config)
            if role.slots}


def check_resources(config, cluster: dict) -> bool:
    """The placement fits the cluster's totals (`ray.cluster_resources()`), else an error listing each role's ask
    and what the cluster has. Returns whether slots are GPUs."""
    gpu = cluster.get("GPU", 0) > 0
    if config.vllm_sync_backend == "nccl" and not gpu:
        raise RlhfxError("--vllm_sync_backend nccl: the Ray cluster has no GPUs, and NCCL connects GPUs.",
                         "drop it (gloo is the default on CPUs), or use a cluster with GPUs.")
    if config.sleep_level and not gpu:
        raise RlhfxError(f"--sleep_level {config.sleep_level}: vLLM's sleep mode releases GPU memory, and the Ray "
                         "cluster has no GPUs.", "drop --sleep_level / --vllm_enable_sleep, or use a cluster with GPUs.")
    asks = demand(config, gpu)
    short = [key for key in ("CPU", "GPU") if sum(ask.get(key, 0) for ask in asks.values()) > cluster.get(key, 0)]
    if short:
        lines = "; ".join(f"{name} {_resources(ask)}" for name, ask in asks.items())
        shared = [f"{role.name} on the {role.on}'s" for role in roles(config) if not role.slots]
        total = {key: sum(ask.get(key, 0) for ask in asks.values()) for key in ("CPU", "GPU") if gpu or key == "CPU"}
        raise RlhfxError(f"The Ray placement asks for {_resources(total)} ({lines}"
                         f"{'; sharing slots: ' + ', '.join(shared) if shared else ''}), but the cluster has "
                         f"{_resources({k: cluster.get(k, 0) for k in total})}.",
                         "lower the --*_num_nodes / --*_num_gpus_per_node / --vllm_num_engines counts or "
                         "--ray_cpus_per_slot, colocate roles (--colocate_actor_ref, --colocate_critic_reward, "
                         "--colocate_all_models), or add "
                         "nodes to the cluster.")
    return gpu


def _resources(ask: dict) -> str:
    return " + ".join(f"{value:g} {key}" for key, value in ask.items())


def connect(address: str):
    """ray, connected to --ray_address (`local` starts a cluster on this machine); a clear error without Ray."""
    try:
        import ray
    except ImportError:
        raise RlhfxError("--ray_address needs Ray, which is not installed.", f"{RAY_EXTRA}, or run without "
                         "--ray_address (torchrun: NPROC_PER_NODE=N rlhfx rlhf ...).") from None
    if not ray.is_initialized():
        import logging

        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                     **({"include_dashboard": False} if address == "local" else {}))
        except ConnectionError as error:
            raise RlhfxError(f"No Ray cluster answers at --ray_address {address}: {error}",
                             "start one (`ray start --head`), pass its HOST:PORT, or use --ray_address local.") \
                from None
    return ray


def placement_group(ray, slots: int, gpu: bool, cpus_per_slot: float, per_bundle: int = 1):
    """A placement group of `slots` slots, `per_bundle` to a bundle, ready (PACK: as few nodes as fit)."""
    from ray.util.placement_group import placement_group as make

    bundle = {"CPU": cpus_per_slot * per_bundle, **({"GPU": per_bundle} if gpu else {})}
    group = make([bundle] * (slots // per_bundle), strategy="PACK")
    ray.get(group.ready())
    return group
