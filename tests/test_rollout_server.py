"""The rollout server's protocol and the client engine (`--vllm_mode server`), with the pt engine served in this
process (tests/test_vllm_rollout.py runs the real vLLM server against a trainer): generation equals the engine's
own, chunked weight pushes land exactly, a push that does not take or a server of another tokenizer/shape is
refused, and a server that dies mid-run stops the trainer with the last checkpoint intact."""

import json
import threading
from http.server import HTTPServer

import pytest
import torch

from e2e import rlhfx
from rlhfx.commands.rollout import handler
from rlhfx.engines import Sampling
from rlhfx.engines import remote
from rlhfx.engines.remote import RemoteEngine, model_shape, tokenizer_fingerprint, wait_for_server
from rlhfx.errors import RlhfxError


def _tiny():
    from rlhfx.engines import stop_token_ids
    from rlhfx.engines.pt import PtEngine
    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_path()))
    model = load_causal_lm(str(tiny_model_path()))
    return PtEngine(model, tokenizer, stop_token_ids(tokenizer)), model, tokenizer


def _info(model, tok, **changes) -> dict:
    return {"engine": "pt", "model": "tiny", "tokenizer": tokenizer_fingerprint(tok),
            "model_shape": model_shape(model.config), "dtype": "float32", **changes}


class Served:
    """An `rlhfx rollout` request handler on `engine` in a thread of this process; `die_after` generate requests it
    closes the connection unanswered and stops listening, as a killed server does."""

    def __init__(self, engine, info, die_after: int | None = None):
        base = handler(engine, info)
        served = self
        self.generates, self.requests = 0, []

        class Dying(base):
            def do_POST(self):
                served.requests.append(self.path)
                if self.path == "/generate":
                    served.generates += 1
                    if die_after is not None and served.generates > die_after:
                        self.close_connection = True
                        served.server.socket.close()
                        threading.Thread(target=served.server.shutdown, daemon=True).start()
                        return
                super().do_POST()

        self.server = HTTPServer(("127.0.0.1", 0), Dying)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served():
    engine, model, tokenizer = _tiny()
    server = Served(engine, _info(model, tokenizer))
    yield server, engine, model, tokenizer
    server.close()


def test_generation_through_the_server_equals_the_engine_and_pushes_land_exactly(served, monkeypatch):
    server, engine, model, tokenizer = served
    policy = _tiny()[1]
    client = RemoteEngine(server.url, tokenizer, engine.stop_ids, policy=policy)
    prompts = [tokenizer("Hi there", add_special_tokens=False)["input_ids"], [5, 6, 7]]
    greedy = Sampling(n=2, max_new_tokens=10, greedy=True)
    assert [[c.token_ids for c in row] for row in client.generate(prompts, greedy)] == \
           [[c.token_ids for c in row] for row in engine.generate(prompts, greedy)]
    # new policy weights, sent in many chunks (one tensor each): the served model then equals the policy exactly
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    monkeypatch.setattr(remote, "CHUNK_BYTES", 1)
    pushed = []
    monkeypatch.setattr(client, "_push", lambda chunk, save, push=client._push: pushed.append(len(chunk)) or push(chunk, save))
    client.update_weights(policy.named_parameters())
    assert pushed == [1] * len(list(policy.parameters()))
    for (name, ours), theirs in zip(policy.named_parameters(), model.parameters()):
        assert torch.equal(ours, theirs), name
    assert client.pushes == 1


def test_a_push_that_does_not_take_is_caught_by_the_greedy_check(served, monkeypatch):
    server, engine, model, tokenizer = served
    policy = _tiny()[1]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    monkeypatch.setattr(engine, "update_weights", lambda named: None)  # the server drops the weights
    client = RemoteEngine(server.url, tokenizer, engine.stop_ids, policy=policy, check_every=2)
    with pytest.raises(RlhfxError, match="After weight push 1, .* other tokens than the policy"):
        client.update_weights(policy.named_parameters())
    client.update_weights(policy.named_parameters())  # push 2 is not checked with check_every 2
    with pytest.raises(RlhfxError, match="After weight push 3"):
        client.update_weights(policy.named_parameters())


def test_across_dtypes_a_server_token_need_only_be_near_the_policys_greedy_one(served):
    server, engine, model, tokenizer = served
    client = RemoteEngine(server.url, tokenizer, engine.stop_ids, policy=model)
    assert not client._other_dtype()
    client.info["dtype"] = "bfloat16"
    assert client._other_dtype()
    prompt = tokenizer(remote.CHECK_PROMPT, add_special_tokens=False)["input_ids"]
    own = engine.generate([prompt], Sampling(max_new_tokens=8, greedy=True))[0][0].token_ids
    assert client._near_greedy(prompt, own)
    logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    assert not client._near_greedy(prompt, [int(logits.argmin())] + own[1:])


def test_a_server_of_another_tokenizer_or_shape_is_refused():
    engine, model, tokenizer = _tiny()
    for changes, words in (({"tokenizer": "0123456789abcdef"}, "another tokenizer"),
                           ({"model_shape": {**model_shape(model.config), "hidden_size": 64}}, "hidden_size 64 vs 128")):
        server = Served(engine, _info(model, tokenizer, **changes))
        try:
            with pytest.raises(RlhfxError, match=words):
                RemoteEngine(server.url, tokenizer, engine.stop_ids, policy=model)
        finally:
            server.close()


def test_no_server_waits_the_timeout_then_names_the_fix():
    with pytest.raises(RlhfxError, match=r"no rollout server answers at http://127.0.0.1:9 after 1 s") as error:
        wait_for_server("http://127.0.0.1:9", 1)
    assert "rlhfx rollout --model" in error.value.fix


def test_server_errors_reach_the_trainer_as_clear_errors(served):
    server, engine, model, tokenizer = served
    client = RemoteEngine(server.url, tokenizer, engine.stop_ids, logprobs=True)
    with pytest.raises(RlhfxError, match="--engine pt\\) returns no log-probs"):
        client.generate([[5, 6]], Sampling(max_new_tokens=2))
    with pytest.raises(RlhfxError, match="refused a weight push .*not_a_weight"):
        client.update_weights([("not_a_weight", torch.zeros(2))])


def test_a_server_dying_mid_run_stops_the_trainer_with_its_last_checkpoint_intact(tmp_path):
    engine, model, tokenizer = _tiny()
    server = Served(engine, _info(model, tokenizer), die_after=4)  # step 1: check + rollout; step 2: check + rollout
    out = tmp_path / "run"
    try:
        result = rlhfx("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#16",
                       "--val_dataset", "demo-prompts#2", "--reward_func", "demo", "--train_type",
                       "full", "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_base_url", server.url,
                       "--max_steps", "4", "--save_steps", "1", "--rollout_batch_size", "2", "--n_samples_per_prompt",
                       "2", "--batch_size", "4", "--generate_max_len", "4", "--output_dir", out, expect_rc=2)
    finally:
        server.server.server_close()
    message = " ".join(result.stderr.split())
    assert "stopped answering during generation" in message and "--resume_from_checkpoint latest" in message
    assert "Traceback" not in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text()) == {"global_step": 1}
    assert (out / "checkpoint-1" / "rl_state.pt").is_file() and not (out / "summary.json").exists()


@pytest.mark.parametrize("deepspeed", ["none", "zero3"])
def test_two_ranks_share_one_server_the_main_rank_pushing_once_per_update(tmp_path, deepspeed):
    """NPROC_PER_NODE=2, one server: before each generation round (the evaluation before training, 3 steps, the
    evaluation after) the main rank pushes once (under ZeRO-3 gathered whole), the other waits, then both check the
    push and generate, so every generation comes after its round's push and before the next one; the server ends
    with the final weights. Without the wait the other rank's requests would come before the push."""
    from safetensors.torch import load_file

    engine, model, tokenizer = _tiny()
    server = Served(engine, _info(model, tokenizer))
    out = tmp_path / "run"
    try:
        rlhfx("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#16", "--val_dataset",
              "demo-prompts#2", "--reward_func", "demo", "--train_type", "full", "--use_vllm", "true", "--vllm_mode",
              "server", "--vllm_server_base_url", server.url, "--max_steps", "3", "--rollout_batch_size", "2",
              "--n_samples_per_prompt", "2", "--batch_size", "2", "--generate_max_len", "4", "--learning_rate", "1e-2",
              "--entropy_coef", "0.1", *(["--deepspeed", deepspeed] if deepspeed != "none" else []), "--output_dir", out,
              env={"NPROC_PER_NODE": "2"})
    finally:
        server.close()
    # per round: one push, then each rank's greedy check and its generation
    assert server.requests == (["/update_weights"] + ["/generate"] * 4) * 5
    final, initial = load_file(out / "model.safetensors"), dict(_tiny()[1].named_parameters())
    served_now = dict(model.named_parameters())
    assert all(torch.equal(served_now[k], v) for k, v in final.items())
    assert any(not torch.equal(initial[k], v) for k, v in final.items())  # trained (the entropy bonus moves them), not the start's


def test_trl_sleep_flag_is_sleep_level_1_and_a_contradiction_is_refused():
    from rlhfx.arguments import parse_args
    from rlhfx.training.swift_flags import apply_swift_flags

    args = parse_args("rlhf", ["--rlhf_type", "grpo", "--use_vllm", "true", "--vllm_enable_sleep_mode", "true"])
    apply_swift_flags(args)
    assert (args.engine, args.sleep_level) == ("vllm", 1)
    args = parse_args("rlhf", ["--rlhf_type", "grpo", "--use_vllm", "true", "--vllm_enable_sleep", "--sleep_level", "0"])
    with pytest.raises(RlhfxError, match="contradict"):
        apply_swift_flags(args)
