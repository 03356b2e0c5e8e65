"""The `pt` engine: transformers `generate` on batches of left-padded prompts with the KV cache.

Prompts are sorted by length (longest first) so each batch carries little padding, generated
`batch_size` prompts at a time (each with its n samples in the same call), and returned in the
caller's order. Greedy decoding generates one sequence per prompt and repeats it n times.
With `sampling.seed` set, the same prompts, batch size and model give the same samples.
"""

import threading
from collections.abc import Iterable, Iterator

from rlhfx.engines import Completion, Engine, Sampling, split_completion


class PtEngine(Engine):
    name = "pt"

    def __init__(self, model, tokenizer, stop_ids: list[int] | None = None, batch_size: int = 16):
        from rlhfx.engines import stop_token_ids

        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids or stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        self.batch_size = max(1, batch_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    def generation_config(self, sampling: Sampling, n: int, max_new_tokens: int | None = None):
        from transformers import GenerationConfig

        sample = {} if sampling.is_greedy else dict(
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
        return GenerationConfig(
            max_new_tokens=max_new_tokens or sampling.max_new_tokens, do_sample=not sampling.is_greedy,
            num_return_sequences=n, repetition_penalty=sampling.repetition_penalty, eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id, use_cache=True, **sample)

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        import torch

        sampling.check()
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        n_per_call = 1 if sampling.is_greedy else sampling.n
        config = self.generation_config(sampling, n_per_call)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[list[Completion] | None] = [None] * len(prompts)
        with _eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                input_ids, attention_mask = self._left_pad([prompts[i] for i in batch])
                out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
                new = out[:, input_ids.shape[1] :].tolist()
                for j, index in enumerate(batch):
                    rows = new[j * n_per_call : (j + 1) * n_per_call]
                    completions = [split_completion(self.tokenizer, ids, self.stop_ids) for ids in rows]
                    results[index] = completions * sampling.n if sampling.is_greedy else completions
        return results

    def stream(self, prompt: list[int], sampling: Sampling) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        sampling.check()
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        input_ids, attention_mask = self._left_pad([prompt])
        config = self.generation_config(sampling, 1)
        errors = []

        def work():
            try:
                with _eval_mode(self.model), torch.inference_mode():
                    self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                        streamer=streamer)
            except Exception as error:  # re-raised in the caller's thread below
                errors.append(error)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if errors:
            raise errors[0]

    def update_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named_tensors:
                params[name].copy_(tensor)

    def _left_pad(self, prompts: list[list[int]]):
        import torch

        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = [[self.pad_id] * (width - len(p)) + list(p) for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


class _eval_mode:
    """Dropout off while generating; the model's train/eval mode is restored afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
