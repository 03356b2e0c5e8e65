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


@pytest.mark.parametrize("kind", [pytest.param("grpo", marks=pytest.mark.slow), "ppo"])
def test_the_ray_actor_group_updates_like_one_process(ray_cluster, tmp_path, kind):
    """Measured max |diff| of the policy weights: 4.2e-7 (grpo), 9.5e-6 (ppo: the critic trains in the same ranks);
    about 70 s each on 2 busy cores (the one-process run, then four Ray actors loading the model), so grpo is slow."""
    import torch

    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.batch import ActorCritic
    from rlhfx.algos.rl.dist import Ranks
    from rlhfx.algos.rl.ray.cluster import launch
    from rlhfx.algos.rl.ray.trainer import RayRollout, RayUpdater
    from rlhfx.algos.rl_math import AdaptiveKLController, RunningMoments
    from rlhfx.arguments import parse_args

    reference = run_worker(kind, tmp_path / "one.pt")
    argv = ["--rlhf_type", kind, "--model", "tiny", "--train_type", "full", "--n_samples_per_prompt", "4",
            "--batch_size", "4", "--rollout_batch_size", "2", "--micro_rollout_batch_size", "2", "--target_kl", "0.1",
            "--max_grad_norm", "0.5", *RAY[:2], "--actor_num_gpus_per_node", "2"]
    args = parse_args("rlhf", argv + (["--critic_learning_rate", "1e-2"] if kind == "ppo" else []))
    config = resolve_config(args, kind)
    cluster = launch(ray_cluster, config, args, False, [0], 10, 1e-3, str(tmp_path))
    assert len(cluster.actors) == 2 and len(cluster.refs) == 1 and len(cluster.engines) == 1
    kl = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
    stage = RayRollout(cluster, args, config, None, None, ActorCritic(None, None), None, Ranks(), 0,
                       lambda: torch.autocast("cpu", enabled=False), kl, RunningMoments())
    batch, stats = stage.experience(fixed_groups(), 0)
    stats.update(RayUpdater(cluster, kl).update(batch, 4, 0))

    def policy(actor):  # run in the actor's process (a nested function travels by value)
        from rlhfx.algos.rl.rollout import policy_weights

        return {name: p.detach().clone() for name, p in policy_weights(actor.policy)}

    trained = ray_cluster.get(cluster.actors[0].__ray_call__.remote(policy))
    engine = ray_cluster.get(cluster.engines[0].__ray_call__.remote(
        lambda worker: {name: p.detach().clone() for name, p in worker.engine.model.named_parameters()}))
    theirs = {k.removeprefix("policy."): v for k, v in reference["weights"].items() if k.startswith("policy.")}
    assert set(theirs) - set(trained) == {"lm_head.weight"}  # tied to the embeddings: one parameter
    diff = max((trained[k] - theirs[k]).abs().max().item() for k in trained)
    print(f"{kind}: max |ray - one process| = {diff:.2e}")
    assert diff <= 1e-5
    assert stats == pytest.approx(reference["stats"], abs=1e-5)
    assert kl.value == pytest.approx(reference["kl_coef"], abs=1e-9)
    # the engine got the trained weights over the weight-sync group, and it trained at all (the comparison is not of
    # two untouched models)
    assert engine.keys() == trained.keys() and all(torch.equal(engine[k], trained[k]) for k in trained)
    assert max((trained[k] - v).abs().max().item() for k, v in _initial().items() if k in trained) > 1e-4
    cluster.close()


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


def test_vllm_engine_actors_refuse_what_cannot_run_and_hold_their_tp_gpus_in_one_bundle(ray_cluster):
    """--engine vllm under Ray (tests/test_vllm_ray.py runs it): tensor parallelism needs a cluster with GPUs, and an
    engine's tp slots are one bundle (vLLM splits the model over the GPUs one actor sees)."""
    from rlhfx.algos.rl import resolve_config
    from rlhfx.algos.rl.ray.placement import check_resources, demand, placement_group
    from rlhfx.arguments import parse_args
    from rlhfx.errors import RlhfxError

    base = ["--rlhf_type", "grpo", "--ray_address", "local", "--reward_func", "demo", "--engine", "vllm"]
    tp = resolve_config(parse_args("rlhf", [*base, "--vllm_num_engines", "2", "--vllm_tensor_parallel_size", "2"]),
                        "grpo")
    with pytest.raises(RlhfxError, match="--vllm_tensor_parallel_size 2: the Ray cluster has no GPUs"):
        check_resources(tp, {"CPU": 16})
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


@pytest.mark.slow
def test_a_stopped_ray_driver_resumes_to_the_uninterrupted_metrics(tmp_path):
    """SIGTERM to the driver: it saves after the step and stops (its Ray cluster with it); the same command with
    --resume_from_checkpoint latest logs what an uninterrupted run logs (each rank's optimizer and random state
    restored, the engines seeded per step)."""
    flags = [*RL, "--rlhf_type", "grpo", "--model", "tiny", "--max_steps", "4", "--save_steps", "2",
             "--rollout_batch_size", "4", "--n_samples_per_prompt", "2", "--batch_size", "2", "--learning_rate", "1e-3"]
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
    assert config.engine == "vllm" and config.vllm_tensor_parallel_size == 2
    assert [(r.name, r.processes, r.slots) for r in roles(config)] == [("actor", 2, 2), ("ref", 2, 0),
                                                                       ("reward", 2, 2), ("engine", 2, 4)]


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
