"""A vLLM engine with two tensor-parallel worker processes on the CPU takes new weights both ways rlhfx pushes them:
`update_weights` (the pairs copied to the workers: a generator cannot be sent to another process) and the
weight-sync group (rlhfx.engines.weight_sync; each worker joins as a rank of its own and loads its shards of
what rank 0, here a thread of the test, broadcasts). Checked by the engine's log-probs of its greedy tokens against
the transformers model's. About 90 s on 2 busy cores (two vLLM worker processes start); run in .venv-vllm.
"""

import os
import socket
import threading

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here (bash scripts/setup_vllm.sh creates .venv-vllm)")

import torch  # noqa: E402

from rlhfx.engines import Sampling  # noqa: E402


def _gap(engine, model, prompt: list[int]) -> float:
    """Largest |engine - model| log-prob of the engine's greedy tokens after `prompt`."""
    completion = engine.generate([prompt], Sampling(n=1, max_new_tokens=8, greedy=True))[0][0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1]
    theirs = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion.token_ids)[:, None])[:, 0]
    return (theirs - torch.tensor(completion.logprobs)).abs().max().item()


def _perturb(model, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_two_tensor_parallel_workers_take_pushed_and_broadcast_weights():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfx.engines.vllm_engine import VllmEngine
    from rlhfx.engines.weight_sync import WeightGroup, specs
    from rlhfx.registry.tiny import tiny_model_path

    path, prompt = str(tiny_model_path()), [1, 2, 3, 4, 5]
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    engine = VllmEngine(path, AutoTokenizer.from_pretrained(path), tp_size=2, kv_cache_memory_gb=0.1, logprobs=True,
                        max_model_len=256)
    try:
        _perturb(model, 0)
        assert _gap(engine, model, prompt) > 1e-2  # the engine still has the old weights
        engine.update_weights(model.named_parameters())
        pushed = _gap(engine, model, prompt)

        _perturb(model, 1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sender = {}
        rank0 = threading.Thread(target=lambda: sender.update(group=WeightGroup("127.0.0.1", port, 0, 3, "gloo")))
        rank0.start()
        engine.join_weight_group("127.0.0.1", port, 1, 3, "gloo")
        rank0.join()
        send = threading.Thread(target=sender["group"].send, args=(model.named_parameters(),))
        send.start()
        engine.receive_weights(specs(model.named_parameters()))
        send.join()
        broadcast = _gap(engine, model, prompt)
    finally:
        engine.close()
    print(f"max |engine - model| log-prob: pushed {pushed:.1e}, broadcast {broadcast:.1e}")
    assert pushed < 1e-4 and broadcast < 1e-4
