"""Reward sources an online RL run combines: reward models, reward functions and HTTP endpoints.

Each source maps a batch of samples (prompt messages, prompt text, response text, label) to one float
per sample; `RewardSources` sums them with weights. A reward model scores prompt + response encoded
with its own tokenizer and template (from its run's args.json), at the last non-pad token. An HTTP
endpoint gets OpenRLHF's request `{"query": [prompt + response], "prompts": [...], "labels": [...]}`
and answers `{"rewards": [...]}`; a failed request is retried, then the run stops with a clear error.
"""

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rlhfx.errors import RlhfxError
from rlhfx.rewards.builtin import NamedReward, is_named
from rlhfx.redact import redact_text

API_KEY_ENV = "RLHFX_REMOTE_RM_API_KEY"


@dataclass
class Sample:
    messages: list  # the prompt as messages
    prompt: str  # the rendered prompt text
    response: str
    label: object = None
    token_ids: list | None = None  # the response's tokens (length-based rewards: cosine, soft_overlong)


class RewardModelScorer:
    """A one-label sequence classifier (an rlhfx rm run or any such folder) with its tokenizer and template."""

    def __init__(self, path: str, dtype: str = "auto", batch_size: int = 16, device=None,
                 use_chat_template: bool = False):
        from rlhfx.models import load_causal_lm, resolve_model_spec

        spec = resolve_model_spec(path, use_chat_template=use_chat_template)
        self.path, self.batch_size = path, batch_size
        self.tokenizer = spec.tokenizer
        self.model = load_causal_lm(spec.adapter or spec.path, dtype, "sequence_classification").eval()
        if device is not None:
            self.model.to(device)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.model.config.pad_token_id
        self.pad_eos_note = pad_id is None or pad_id == self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
        self.model.config.pad_token_id = self.pad_id  # the head is read at the last token that is not this one
        self.encoder = spec.choice.encoder(self.tokenizer)

    def sequence(self, messages, text: str, response: str) -> list[int]:
        """Prompt + response ids as the reward model was trained on them; raw text + EOS without messages."""
        if isinstance(messages, list) and messages:
            return self.encoder.encode_prompt(messages) + self.encoder.encode_completion(messages, response)
        return list(self.tokenizer(text + response, add_special_tokens=False)["input_ids"]) + [self.tokenizer.eos_token_id]

    def __call__(self, samples: list[Sample]) -> list[float]:
        from rlhfx.rewards.score import score_sequences

        sequences = [self.sequence(s.messages, s.prompt, s.response) for s in samples]
        return score_sequences(self.model, self.pad_id, sequences, self.batch_size)


class FunctionReward:
    def __init__(self, spec: str, timeout: float | None = None):
        from rlhfx.rewards.functions import load_reward_func

        self.spec, self.func, self.timeout = spec, load_reward_func(spec), timeout

    def __call__(self, samples: list[Sample]) -> list[float]:
        from rlhfx.rewards.functions import call_reward_func

        return call_reward_func(self.func, [s.prompt + s.response for s in samples], [s.prompt for s in samples],
                                [s.label for s in samples], self.spec, self.timeout)


class RemoteReward:
    """OpenRLHF's remote reward protocol over HTTP POST, with a timeout and retries.

    A server that wants a key gets it from the environment, never from the command line or the files a run writes:
    with RLHFX_REMOTE_RM_API_KEY set, every request carries `Authorization: Bearer <key>` (what OpenAI-compatible
    servers such as `vllm serve --api-key` check). A key in the URL still works, but is redacted in args.json and
    in messages.
    """

    def __init__(self, url: str, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5):
        self.url, self.name = url, redact_text(url)
        if not url.startswith(("http://", "https://")):
            raise RlhfxError(f"--remote_rm_url {self.name!r} is not an http(s) URL.",
                             "pass e.g. http://localhost:5000/get_reward.")
        self.timeout, self.retries, self.backoff = timeout, max(1, retries), backoff

    def headers(self) -> dict:
        key = os.environ.get(API_KEY_ENV)
        return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def __call__(self, samples: list[Sample]) -> list[float]:
        body = json.dumps({"query": [s.prompt + s.response for s in samples], "prompts": [s.prompt for s in samples],
                           "labels": [s.label for s in samples]}).encode()
        error = None
        for attempt in range(self.retries):
            request = urllib.request.Request(self.url, data=body, headers=self.headers())
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return self._rewards(json.loads(response.read()), len(samples))
            except (OSError, http.client.HTTPException, json.JSONDecodeError, UnicodeDecodeError) as caught:
                # OSError: URLError, HTTPError, timeouts, refused or reset connections; HTTPException: a reply that is
                # not HTTP (BadStatusLine) or a body cut short (IncompleteRead)
                error = caught
                time.sleep(self.backoff * (attempt + 1))
        fix = ("check that the server is up and answers POST {query, prompts, labels} with {rewards}, "
               "or raise --remote_rm_timeout / --remote_rm_retries.")
        if isinstance(error, urllib.error.HTTPError) and error.code in (401, 403):
            fix = f"set {API_KEY_ENV} to the key the server expects (sent as `Authorization: Bearer <key>`)."
        described = redact_text(f"{type(error).__name__}: {error}")
        raise RlhfxError(f"The remote reward model {self.name} failed {self.retries} times; last error: {described}.",
                         fix)

    def _rewards(self, answer, n: int) -> list[float]:
        rewards = answer.get("rewards") if isinstance(answer, dict) else None
        if not isinstance(rewards, list) or len(rewards) != n:
            raise RlhfxError(f"The remote reward model {self.name} answered {str(answer)[:200]!r}, "
                             f"not {{\"rewards\": [{n} numbers]}}.", "fix the server's response format.")
        try:
            return [float(r) for r in rewards]
        except (TypeError, ValueError):
            raise RlhfxError(f"The remote reward model {self.name} returned rewards that are not numbers.",
                             "return a list of floats.") from None


def check_reward_sources(reward_models, reward_funcs, urls, weights, knobs=None) -> list[float]:
    """Fail before any model loads: no source, a weight count that does not match, a missing folder or file,
    a bad URL. Returns the weights (default 1 each). `knobs`: what the named rewards read (the run's RLOptions)."""
    from rlhfx.rewards.functions import load_reward_func

    names = [*reward_models, *reward_funcs, *urls]
    if not names:
        raise RlhfxError("Online RL needs a reward source.",
                         "pass --reward_model FOLDER, --reward_func demo|file.py or --remote_rm_url URL.")
    weights = list(weights) if weights else [1.0] * len(names)
    if len(weights) != len(names):
        raise RlhfxError(f"--reward_weights has {len(weights)} weights for {len(names)} reward sources "
                         f"({', '.join(redact_text(str(n)) for n in names)}).", "give one weight per source: models, functions, URLs in order.")
    for path in reward_models:
        if not Path(path).is_dir():
            raise RlhfxError(f"--reward_model folder {path} does not exist.",
                             "pass the output folder of `rlhfx rlhf --rlhf_type rm` or another one-label classifier.")
    for spec in reward_funcs:
        NamedReward(spec, knobs) if is_named(spec) else load_reward_func(spec)
    for url in urls:
        RemoteReward(url)
    return weights


class RewardSources:
    """Every source given, summed with weights (default 1 each), in the order models, functions, URLs."""

    def __init__(self, reward_models=(), reward_funcs=(), urls=(), weights=None, dtype: str = "auto",
                 batch_size: int = 16, timeout: float = 30.0, retries: int = 3, device=None,
                 use_chat_template: bool = False, knobs=None, func_timeout: float | None = None):
        self.weights = check_reward_sources(reward_models, reward_funcs, urls, weights, knobs)
        self.sources = ([NamedReward(f, knobs) if is_named(f) else FunctionReward(f, func_timeout)
                         for f in reward_funcs]
                        + [RemoteReward(u, timeout, retries) for u in urls])
        self.sources = [RewardModelScorer(m, dtype, batch_size, device, use_chat_template)
                        for m in reward_models] + self.sources

    def __call__(self, samples: list[Sample]) -> list[float]:
        total = [0.0] * len(samples)
        for weight, source in zip(self.weights, self.sources):
            total = [t + weight * r for t, r in zip(total, source(samples))]
        return total
