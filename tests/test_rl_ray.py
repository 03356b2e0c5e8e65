"""Online RL with its roles as Ray actors (--ray_address; rlhfx.algos.rl.ray) on a local Ray cluster.

On the fixed rollout of tests/rl_update_worker.py (2 prompts x 4 responses, fixed rewards), the actor group of two
Ray actors (a DDP group of two ranks, each half the batch), with the reference and an engine as actors of their
own, trains exactly like one process taking the batch whole (as tests/test_rl_distributed.py's torchrun ranks do).
The CLI runs (--ray_address local) are slow: a Ray cluster and its actors start for each (40-55 s for two steps of
the tiny model on 2 cores); the file's other tests take about 50 s (measured on an idle machine).
"""

import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from cli_inprocess import run_cli  # noqa: E402,F401  (a fixture)

from e2e import metrics, rlhfx, stop_resume_and_compare, summary  # noqa: E402
from rl_update_worker import fixed_groups  # noqa: E402
from test_rl_distributed import run_worker  # noqa: E402

from rlhfx.algos.rl.ray.placement import roles  # noqa: E402

RAY = ["--ray_address", "local", "--ray_cpus_per_slot", "0.5", "--actor_num_gpus_per_node", "2"]
RL = ["rlhf", "--dataset", "demo-prompts", "--train_type", "full", "--generate_max_len", "16", "--logging_steps", "1",
      "--lr_scheduler_type", "constant", "--reward_func", "demo", "--seed", "42", *RAY]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("kind,actors,critics,deepspeed", [
    pytest.param("grpo", 2, 0, None, marks=pytest.mark.slow), ("ppo", 1, 1, None),
    pytest.param("ppo", 1, 2, None, marks=pytest.mark.slow),
    pytest.param("ppo", 2, 1, "zero3", marks=pytest.mark.slow)],
    ids=["grpo", "ppo", "ppo-two-critic-ranks", "ppo-zero3"])
def test_the_ray_groups_update_like_one_process(ray_cluster, tmp_path, kind, actors, critics, deepspeed):
    """The actor group (and with ppo the critic group, its own ranks and placement group) against one process
    training the policy and the critic in one loop. Measured max |diff| of the policy and critic weights: 9.5e-7
    (grpo, two actor ranks), 1.7e-6 (ppo, one actor and one or two critic ranks), 9.6e-6 (ppo under ZeRO-3: two
    actor ranks gathering each weight for the sync, a critic rank); 80-110 s each on 2 busy cores (the one-process
    run, then the Ray actors loading the model), so all but ppo with one rank each are slow."""
    flags = ["--ray_cpus_per_slot", "0.5", "--actor_num_gpus_per_node", str(actors)]
    if critics:
        flags += ["--critic_learning_rate", "1e-2", "--critic_num_gpus_per_node", str(critics)]
    if deepspeed:
        flags += ["--deepspeed", deepspeed]
    cluster = _update_like_one_process(ray_cluster, tmp_path, kind, actors, flags)
    counts = [len(cluster.actors), len(cluster.critics), len(cluster.refs), len(cluster.engines)]
    assert counts == [actors, critics, 1, 1]
    cluster.close()


def _update_like_one_process(ray, tmp_path, kind: str, actors: int, flags: list):
    """One update of the Ray groups (placed as `flags` say) on the fixed rollout, checked against one process; the
    engines must then hold the trained policy. Returns the cluster."""
    import torch

    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.batch import ActorCritic
    from rlhfx.algos.rl.dist import Ranks
    from rlhfx.algos.rl.ray.cluster import launch
    from rlhfx.algos.rl.ray.trainer import RayRollout, RayUpdater
    from rlhfx.algos.rl_math import AdaptiveKLController, RunningMoments
    from rlhfx.arguments import parse_args

    reference = run_worker(kind, tmp_path / "one.pt")
    batch_size = 8 // actors  # each actor rank's share of the 8 samples is one optimizer batch, as the one process's
    argv = ["--rlhf_type", kind, "--model", "tiny", "--train_type", "full", "--n_samples_per_prompt", "4",
            "--batch_size", str(batch_size), "--rollout_batch_size", "2", "--micro_rollout_batch_size", "2",
            "--target_kl", "0.1", "--max_grad_norm", "0.5", *RAY[:2], *flags]
    args = parse_args("rlhf", argv)
    config = resolve_config(args, kind)
    cluster = launch(ray, config, args, False, [0], 10, 1e-3, str(tmp_path))
    kl = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
    stage = RayRollout(cluster, args, config, None, None, ActorCritic(None, None), None, Ranks(), 0,
                       lambda: torch.autocast("cpu", enabled=False), kl, RunningMoments())
    batch, stats = stage.experience(fixed_groups(), 0)
    stats.update(RayUpdater(cluster, kl).update(batch, batch_size, 0))

    def policy(actor):  # run in the actor's process (a nested function travels by value)
        from rlhfx.algos.rl.rollout import policy_weights

        return {name: p.detach().clone() for name, p in policy_weights(actor.policy)}

    def critic(worker):
        return {k: v.detach().cpu() for k, v in worker.accelerator.get_state_dict(worker.stage.critic).items()}

    # every rank reads (under ZeRO-3 each weight is gathered by the whole group); rank 0's answer is compared
    trained = ray.get([actor.__ray_call__.remote(policy) for actor in cluster.actors])[0]
    # every engine got the trained weights over the weight-sync group
    for engine in ray.get([engine.__ray_call__.remote(lambda worker: {
            name: p.detach().clone() for name, p in worker.engine.model.named_parameters()})
            for engine in cluster.engines]):
        assert engine.keys() == trained.keys() and all(torch.equal(engine[k], trained[k]) for k in trained)
    theirs = {k.removeprefix("policy."): v for k, v in reference["weights"].items() if k.startswith("policy.")}
    assert set(theirs) - set(trained) == {"lm_head.weight"}  # tied to the embeddings: one parameter
    if cluster.critics:  # the critic group's rank 0 holds the trained critic whole (DDP), or gathers it (ZeRO-3)
        critic = ray.get([worker.__ray_call__.remote(critic) for worker in cluster.critics])[0]
        assert set(critic) == {k for k in reference["weights"] if k.startswith("critic.")}
        assert critic["critic.score.weight"].abs().max() > 1e-4  # the zero-initialised head trained
        trained.update(critic)
        theirs.update({k: reference["weights"][k] for k in critic})
    diff = max((trained[k] - theirs[k]).abs().max().item() for k in trained)
    print(f"{kind} {' '.join(flags)}: max |ray - one process| = {diff:.2e}")
    assert diff <= 1e-5
    assert stats == pytest.approx(reference["stats"], abs=1e-5)
    assert kl.value == pytest.approx(reference["kl_coef"], abs=1e-9)
    # the policy trained at all (the comparison is not of two untouched models)
    assert max((trained[k] - v).abs().max().item() for k, v in _initial().items() if k in trained) > 1e-4
    return cluster


def test_both_groups_rank_r_get_one_sample_order_from_the_driver():
    """Actor rank r and critic rank r visit their shares in one order (one process's policy and critic share one
    shuffle), fixed by (seed, step, rank) so a resumed run shuffles as an uninterrupted one; a critic group of another
    size takes the actor group's number of optimizer steps. No cluster: the workers are stand-ins."""
    from types import SimpleNamespace

    import torch

    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.ray.cluster import Cluster
    from rlhfx.arguments import parse_args

    config = resolve_config(parse_args("rlhf", ["--rlhf_type", "ppo", "--num_ppo_epochs", "2"]), "ppo")

    def worker(calls: list):
        return SimpleNamespace(update=SimpleNamespace(remote=lambda *a: calls.append(a) or {"n": len(calls)}))

    def send(actors: int, critics: int, step: int, train_batch: int):
        calls = {"actor": [], "critic": []}
        cluster = Cluster(SimpleNamespace(get=lambda refs: refs), config, 42, [worker(calls["actor"])] * actors,
                          [worker(calls["critic"])] * critics, [], [], [], [])
        cluster.update({"mask": torch.ones(8, 3)}, train_batch, step, 0.05)
        return [(len(part["mask"]), batch, orders) for part, batch, _, orders, *_ in calls["actor"]], \
               [(len(part["mask"]), batch, orders) for part, batch, _, orders in calls["critic"]]

    policy, critic = send(2, 2, 0, 2)
    assert policy == critic  # rank r: the same share size, optimizer batch and order of every epoch
    for _, _, orders in policy:
        assert len(orders) == 2 and all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert any(order != [0, 1, 2, 3] for _, _, orders in policy for order in orders)  # shuffled
    assert send(2, 2, 0, 2) == (policy, critic) and send(2, 2, 1, 2)[0] != policy  # fixed per step, new each step
    policy, critic = send(1, 2, 0, 4)  # the actor rank: 8 samples in 2 steps of 4; the critic ranks: 4 in 2 of 2
    assert [(n, batch) for n, batch, _ in policy] == [(8, 4)] and [(n, batch) for n, batch, _ in critic] == [(4, 2)] * 2
    assert critic[0][2] != critic[1][2]
    assert send(2, 0, 0, 2)[1] == []  # grpo: no critic group, nothing sent to one


def test_the_update_stage_follows_the_order_it_is_given():
    """UpdateStage.update with the driver's `orders` (the critic group's stage: ActorCritic(None, critic)) visits the
    samples in that order, one optimizer batch after the other, micro batch by micro batch."""
    from contextlib import nullcontext

    import torch
    from accelerate import Accelerator

    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.batch import ActorCritic
    from rlhfx.algos.rl.dist import Ranks
    from rlhfx.algos.rl.update import UpdateStage
    from rlhfx.arguments import parse_args

    args = parse_args("rlhf", ["--rlhf_type", "ppo", "--num_ppo_epochs", "2", "--batch_size", "1"])
    config = resolve_config(args, "ppo")
    stage = UpdateStage(Accelerator(cpu=True), Ranks(), ActorCritic(None, torch.nn.Linear(1, 1)), config, args, 1e-3,
                        1e-3, 10, None, nullcontext, ".")
    assert stage.policy is None and len(stage.models) == len(stage.schedulers) == 1
    seen = []

    def loss(micro, counts, share):
        seen.append(micro["row"].tolist())
        return [stage.critic.critic.weight.sum() * 0], {"value_loss": 0.0}

    stage.loss = loss
    stats = stage.update({"mask": torch.ones(4, 2), "row": torch.arange(4)}, 2, 0, [[3, 1, 0, 2], [2, 0, 1, 3]])
    assert seen == [[3], [1], [0], [2], [2], [0], [1], [3]] and stats == {"value_loss": 0.0}


def _initial():
    from safetensors.torch import load_file

    from rlhfx.registry.tiny import tiny_model_path

    return load_file(tiny_model_path() / "model.safetensors")


def test_the_placement_must_fit_the_cluster(ray_cluster, run_cli):
    """Checked against ray.cluster_resources() (here the 4 CPUs of the test's cluster) before any model loads
    (--model names a folder that is not there: the resources error comes first)."""
    code, out = run_cli(*RL[:1], "--rlhf_type", "grpo", "--model", "/nonexistent/model", "--dataset", "demo-prompts",
                        "--ray_address", "local", "--ray_cpus_per_slot", "1", "--actor_num_nodes", "2",
                        "--actor_num_gpus_per_node", "4", "--reward_func", "demo", "--rollout_batch_size", "8",
                        "--output_dir", "/tmp/rlhfx-ray-never")
    assert code == 2, out
    asked = "The Ray placement asks for 10 CPU (actor 8 CPU; ref 1 CPU; engine 1 CPU), but the cluster has 4 CPU."
    assert asked in out, out
    assert "Traceback" not in out


def test_without_ray_the_error_names_the_extra(run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    code, out = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts", "--reward_func",
                        "demo", "--ray_address", "local")
    assert code == 2 and "--ray_address needs Ray, which is not installed" in out and "pip install 'rlhfx[ray]'" in out


def test_placement_flags_need_ray_and_colocation_needs_equal_counts(run_cli):
    code, out = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts", "--reward_func",
                        "demo", "--actor_num_nodes", "2")
    assert code == 2 and "--actor_num_nodes places a role on a Ray cluster, but this run has no --ray_address" in out
    code, out = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts", "--reward_func",
                        "demo", "--ray_address", "local", "--actor_num_gpus_per_node", "2", "--colocate_actor_ref")
    assert code == 2 and "--colocate_actor_ref: the ref role asks for 1 slots, the actor group has 2" in out, out
    for extra in (["--multi_turn_scheduler", "math_tip_trick"],
                  ["--chord_sft_dataset", "demo-sft", "--chord_sft_per_device_train_batch_size", "1",
                   "--chord_mu_warmup_steps", "0", "--chord_mu_decay_steps", "2", "--chord_mu_peak", "0.5",
                   "--chord_mu_valley", "0.5"]):
        code, out = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts",
                            "--reward_func", "demo", "--ray_address", "local", *extra)
        assert code == 2 and f"{extra[0]} with --ray_address" in out, out


def test_colocated_roles_reserve_only_the_actor_groups_slots():
    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.ray.placement import demand
    from rlhfx.arguments import parse_args

    two = ["--actor_num_gpus_per_node", "2", "--ref_num_gpus_per_node", "2", "--vllm_num_engines", "2"]
    base = ["--rlhf_type", "grpo", "--ray_address", "local", "--reward_func", "demo", *two]
    apart = resolve_config(parse_args("rlhf", base), "grpo")
    assert demand(apart, gpu=True) == {"actor": {"CPU": 2, "GPU": 2}, "ref": {"CPU": 2, "GPU": 2},
                                       "engine": {"CPU": 2, "GPU": 2}}
    together = resolve_config(parse_args("rlhf", [*base, "--colocate_all_models"]), "grpo")
    assert demand(together, gpu=False) == {"actor": {"CPU": 2}}
    ref = resolve_config(parse_args("rlhf", [*base, "--colocate_actor_ref", "--ray_cpus_per_slot", "0.5"]), "grpo")
    assert demand(ref, gpu=False) == {"actor": {"CPU": 1}, "engine": {"CPU": 1}}


def test_the_critic_group_has_slots_of_its_own_or_shares_the_reward_or_actor_groups():
    """gae's critic group: the actor group's counts by default, --critic_num_* to size it, the reward models' slots
    with --colocate_critic_reward (their counts by default), the actor group's with --colocate_all_models; its own
    slots count against the cluster; colocation with other counts, or without a critic or reward model, is refused."""
    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.ray.placement import check_resources, demand
    from rlhfx.arguments import parse_args
    from rlhfx.errors import RlhfxError

    base = ["--ray_address", "local", "--actor_num_gpus_per_node", "2", "--rollout_batch_size", "8"]

    def placed(*extra, kind="ppo"):
        config = resolve_config(parse_args("rlhf", ["--rlhf_type", kind, *base, *extra]), kind)
        return config, {role.name: (role.processes, role.on) for role in roles(config)}, demand(config, gpu=True)

    config, plan, asks = placed()
    assert plan["critic"] == (2, "critic") and asks["critic"] == {"CPU": 2, "GPU": 2}
    with pytest.raises(RlhfxError, match=r"asks for 6 CPU \+ 6 GPU \(actor 2 CPU \+ 2 GPU; critic 2 CPU \+ 2 GPU;"):
        check_resources(config, {"CPU": 16, "GPU": 4})
    assert placed("--critic_num_nodes", "2", "--critic_num_gpus_per_node", "4")[2]["critic"] == {"CPU": 8, "GPU": 8}
    rm = ["--reward_model", "tiny", "--reward_num_gpus_per_node", "4"]
    _, plan, asks = placed(*rm, "--colocate_critic_reward")
    assert plan["critic"] == (4, "reward") and "critic" not in asks and asks["reward"] == {"CPU": 4, "GPU": 4}
    _, plan, asks = placed("--ref_num_gpus_per_node", "2", "--vllm_num_engines", "2", "--colocate_all_models")
    assert plan["critic"] == (2, "actor") and asks == {"actor": {"CPU": 2, "GPU": 2}}
    assert "critic" not in placed("--reward_func", "demo", kind="grpo")[1]
    for extra, words in ((["--colocate_critic_reward"], "--colocate_critic_reward puts the critic group on the reward "
                          "model group's slots, but this run has no --reward_model"),
                         ([*rm, "--colocate_critic_reward", "--critic_num_gpus_per_node", "2"],
                          "--colocate_critic_reward: the critic role asks for 2 slots, the reward group has 4"),
                         (["--critic_num_gpus_per_node", "3"], "The rollout's 8 samples .* do not split evenly over "
                          "the critic group's 3 ranks")):
        with pytest.raises(RlhfxError, match=words):
            placed(*extra)
    for extra in (["--colocate_critic_reward"], ["--critic_num_nodes", "2"]):
        with pytest.raises(RlhfxError, match="--advantage_estimator group_norm trains no critic"):
            placed("--reward_func", "demo", *extra, kind="grpo")


def test_vllm_engine_actors_refuse_what_cannot_run_and_hold_their_tp_gpus_in_one_bundle(ray_cluster):
    """--engine vllm under Ray (tests/test_vllm_ray.py runs it, tp 1 and 2 on CPU slots): an engine's tp slots are
    one bundle (vLLM splits the model over the GPUs one actor sees), on a cluster with or without GPUs."""
    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.ray.placement import check_resources, demand, placement_group
    from rlhfx.arguments import parse_args
    from rlhfx.errors import RlhfxError

    base = ["--rlhf_type", "grpo", "--ray_address", "local", "--reward_func", "demo", "--engine", "vllm"]
    tp = resolve_config(parse_args("rlhf", [*base, "--vllm_num_engines", "2", "--vllm_tensor_parallel_size", "2"]),
                        "grpo")
    assert check_resources(tp, {"CPU": 16}) is False
    assert demand(tp, gpu=False)["engine"] == {"CPU": 4}
    assert check_resources(tp, {"CPU": 16, "GPU": 8}) is True
    assert demand(tp, gpu=True)["engine"] == {"CPU": 4, "GPU": 4}
    group = placement_group(ray_cluster, 4, False, 0.5, per_bundle=2)
    assert group.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}]
    from ray.util.placement_group import remove_placement_group

    remove_placement_group(group)
    for extra, words in ((["--vllm_mode", "server"], "--vllm_mode server with --ray_address"),
                         (["--vllm_tensor_parallel_size", "2", "--colocate_all_models"],
                          "--colocate_all_models with --vllm_tensor_parallel_size 2"),
                         (["--offload_model"], "--offload_model with --ray_address")):
        with pytest.raises(RlhfxError, match=words):
            resolve_config(parse_args("rlhf", [*base, *extra]), "grpo")


def test_the_weight_sync_backend_is_nccl_between_gpus_and_gloo_elsewhere():
    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.ray.cluster import sync_backend
    from rlhfx.algos.rl.ray.placement import check_resources
    from rlhfx.arguments import parse_args
    from rlhfx.errors import RlhfxError

    base = ["--rlhf_type", "grpo", "--reward_func", "demo"]
    ray = [*base, "--ray_address", "local"]
    plain = resolve_config(parse_args("rlhf", ray), "grpo")
    assert (sync_backend(plain, gpu=True), sync_backend(plain, gpu=False)) == ("nccl", "gloo")
    together = resolve_config(parse_args("rlhf", [*ray, "--colocate_all_models"]), "grpo")
    assert sync_backend(together, gpu=True) == "gloo"  # engine i shares actor rank i's GPU
    chosen = resolve_config(parse_args("rlhf", [*ray, "--vllm_sync_backend", "gloo"]), "grpo")
    assert sync_backend(chosen, gpu=True) == "gloo"
    nccl = resolve_config(parse_args("rlhf", [*ray, "--vllm_sync_backend", "nccl"]), "grpo")
    with pytest.raises(RlhfxError, match="--vllm_sync_backend nccl: the Ray cluster has no GPUs"):
        check_resources(nccl, {"CPU": 16})
    for flags, words in (([*ray, "--vllm_sync_backend", "nccl", "--colocate_all_models"],
                          "--vllm_sync_backend nccl with --colocate_all_models"),
                         ([*base, "--vllm_sync_backend", "gloo"], "this run has no --ray_address")):
        with pytest.raises(RlhfxError, match=words):
            resolve_config(parse_args("rlhf", flags), "grpo")


@pytest.mark.slow
def test_grpo_on_ray_raises_the_held_out_reward(sft_model, tmp_path):
    """The torchrun test's run (tests/test_rl_distributed.py: 8 prompts x 4 per step, 20 steps) with the actor group
    of two Ray actors, reference and engine actors of their own, on 2 CPUs. Measured (seed 42): 0.00 -> 0.47 (torchrun
    0.56, one process 0.48); about 130 s."""
    out = tmp_path / "grpo"
    rlhfx(*RL, "--rlhf_type", "grpo", "--model", sft_model, "--val_dataset", "demo-prompts#32", "--learning_rate",
          "1e-4", "--max_steps", "20", "--rollout_batch_size", "8", "--n_samples_per_prompt", "4", "--batch_size", "16",
          "--output_dir", out)
    before, after = summary(out)["before"]["eval_reward"], summary(out)["after"]["eval_reward"]
    print(f"eval_reward {before} -> {after}")
    assert before == pytest.approx(0.0) and after >= before + 0.25, (before, after)
    assert [m["step"] for m in metrics(out) if "reward" in m] == list(range(1, 21))


def test_a_resume_needs_the_critic_group_that_saved_the_checkpoint(tmp_path):
    from rlhfx.algos.rl.ray.trainer import check_critic_ranks
    from rlhfx.errors import RlhfxError

    (tmp_path / "train_state" / "critic").mkdir(parents=True)
    (tmp_path / "train_state" / "critic" / "random_states_0.pkl").touch()
    check_critic_ranks(tmp_path / "train_state", 1)
    with pytest.raises(RlhfxError, match="holds the training state of 1 critic ranks .* this run's critic group has 2"):
        check_critic_ranks(tmp_path / "train_state", 2)


@pytest.mark.slow
@pytest.mark.parametrize("kind,deepspeed", [("grpo", None), ("ppo", None), ("ppo", "zero3")],
                         ids=["grpo", "ppo", "ppo-zero3"])
def test_a_stopped_ray_driver_resumes_to_the_uninterrupted_metrics(tmp_path, kind, deepspeed):
    """SIGTERM to the driver: it saves after the step and stops (its Ray cluster with it); the same command with
    --resume_from_checkpoint latest logs what an uninterrupted run logs (each rank's optimizer and random state
    restored, the engines seeded per step; ppo: the critic group's state too, its value loss compared; ZeRO-3: each
    rank's shards of both groups saved and loaded, the policy gathered by both actor ranks for the save and the
    sync)."""
    flags = [*RL, "--rlhf_type", kind, "--model", "tiny", "--max_steps", "4", "--save_steps", "2",
             "--rollout_batch_size", "4", "--n_samples_per_prompt", "2", "--batch_size", "2", "--learning_rate", "1e-3"]
    if kind == "ppo":  # a critic group of one rank beside the actor group's two, in this machine's 2 CPUs; a reward
        # that varies over the tiny model's text (demo's is 0 for all of it), so the critic has values to restore
        flags[flags.index("demo")] = "soft_overlong"
        flags += ["--soft_max_length", "16", "--soft_cache_length", "12", "--critic_num_gpus_per_node", "1",
                  "--ray_cpus_per_slot", "0.25"]
    if deepspeed:
        flags += ["--deepspeed", deepspeed]
    stop_resume_and_compare(flags, tmp_path / "whole", tmp_path / "killed")


@pytest.mark.slow
def test_a_killed_ray_driver_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL to the driver once checkpoint-2 exists (mid step 3: nothing saved after it; the local Ray cluster it
    started dies with it): the same command with --resume_from_checkpoint latest continues from checkpoint-2 and logs
    what an uninterrupted run logs."""
    flags = [*RL, "--rlhf_type", "grpo", "--model", "tiny", "--max_steps", "4", "--save_steps", "2",
             "--rollout_batch_size", "4", "--n_samples_per_prompt", "2", "--batch_size", "2", "--learning_rate", "1e-3"]
    stop_resume_and_compare(flags, tmp_path / "whole", tmp_path / "killed", sigkill=True)

def test_the_migration_pages_ray_command_resolves():
    """docs/migrating-from-openrlhf.md's rlhfx form of the seed's `ray job submit` command: its flags parse and the
    placement checks pass (nothing connects or loads)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
    from gen_migrating_docs import RAY_RLHFX

    from rlhfx.algos.rl import resolve_config
    from rlhfx.arguments import parse_args
    from rlhfx.commands.rlhf import check_flags_apply
    from rlhfx.training.swift_flags import apply_swift_flags

    args = parse_args("rlhf", RAY_RLHFX)
    check_flags_apply(args)
    apply_swift_flags(args)
    config = resolve_config(args, "ppo")
    assert config.ray_address == "auto" and config.colocate_actor_ref and config.vllm_num_engines == 2
    assert config.engine == "vllm" and config.vllm_tensor_parallel_size == 2 and config.colocate_critic_reward
    assert [(r.name, r.processes, r.slots, r.on) for r in roles(config)] == [
        ("actor", 2, 2, "actor"), ("critic", 2, 0, "reward"), ("ref", 2, 0, "actor"), ("reward", 2, 2, "reward"),
        ("engine", 2, 4, "engine")]


@pytest.mark.slow
def test_every_role_on_the_actor_groups_slots_with_zero2(tmp_path):
    """--colocate_all_models: two actor ranks (ppo: with their critics) on DeepSpeed ZeRO-2, two reference and two
    engine actors on the same two slots, each process a third of its slot (about 55 s)."""
    out = tmp_path / "together"
    rlhfx(*RL, "--rlhf_type", "ppo", "--model", "tiny", "--max_steps", "2", "--rollout_batch_size", "4",
          "--n_samples_per_prompt", "2", "--batch_size", "4", "--ref_num_gpus_per_node", "2", "--vllm_num_engines", "2",
          "--colocate_all_models", "--deepspeed", "zero2", "--output_dir", out)
    steps = [m for m in metrics(out) if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2] and all(m["value_loss"] >= 0 for m in steps)


@pytest.mark.slow
def test_the_driver_loads_no_weights(run_cli, monkeypatch, tmp_path):
    """The driver reads the policy's skeleton on the meta device (module names, config, stop tokens) and loads no
    reference: the actors hold the weights (a 70B policy and its reference would take ~280 GB of its host memory).
    Run in this process with the loaders replaced by failures (the actors, in their own processes, load as usual);
    about 45 s. Late in the file: the run shuts its Ray cluster down."""
    from safetensors.torch import load_file

    import rlhfx.models
    import rlhfx.models.load

    def never(*args, **kwargs):
        raise AssertionError("the Ray driver loaded weights")

    monkeypatch.setattr(rlhfx.models.load, "load_causal_lm", never)
    monkeypatch.setattr(rlhfx.models, "load_reference", never)
    reward = tmp_path / "length.py"  # rewards that differ within a group, so the one step changes the policy
    reward.write_text("def reward_func(queries, prompts, labels):\n    return [len(q) / 100 for q in queries]\n")
    out = tmp_path / "driver"
    code, log = run_cli(*RL[:-len(RAY) - 4], *RAY, "--reward_func", reward, "--seed", "42", "--rlhf_type", "grpo",
                        "--model", "tiny", "--max_steps", "1", "--rollout_batch_size", "2", "--n_samples_per_prompt",
                        "2", "--batch_size", "2", "--learning_rate", "1e-3", "--output_dir", out)
    assert code == 0, log
    trained, initial = load_file(out / "model.safetensors"), _initial()
    assert max((trained[k] - initial[k]).abs().max().item() for k in trained) > 1e-4  # the actors trained and saved


@pytest.mark.slow
def test_an_actor_group_spans_two_nodes(tmp_path):
    """A Ray cluster of two nodes on this machine (ray.cluster_utils, one CPU each) and --actor_num_nodes 2
    --actor_num_gpus_per_node 1 with a whole CPU per slot: the actor group's placement group (one bundle per slot,
    PACK) cannot fit on one node, so rank 1 runs on the other node, reaches rank 0's rendezvous
    (ray.util.get_node_ip_address) and trains like one process, the reference and engine actors on the same slots
    (--colocate_all_models). Measured max |diff| 9.5e-7 (grpo); about 130 s on 2 busy cores. Run after the tests
    on the module's one-node cluster: it shuts that down."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False)
    try:
        cluster = _update_like_one_process(ray, tmp_path, "grpo", 2, [
            "--ray_cpus_per_slot", "1", "--actor_num_nodes", "2", "--actor_num_gpus_per_node", "1",
            "--colocate_all_models", "--ref_num_gpus_per_node", "2", "--vllm_num_engines", "2"])
        where = ray.get([actor.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
                         for actor in cluster.actors])
        assert len(set(where)) == 2, where
        cluster.close()
    finally:
        ray.shutdown()
        nodes.shutdown()
