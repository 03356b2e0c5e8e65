"""The `server` engine: generation on an `rlhfx rollout` server (--vllm_mode server), over HTTP.

The trainer sends token-id prompts and gets token ids (and log-probs) back; it pushes the policy's weights as
safetensors bytes, in chunks, after every update, and then checks the push: the server's greedy answer to a fixed
prompt must equal the policy's own. Only the standard library and safetensors are used, so the trainer needs no
vLLM (it may run in another environment than the server).

Protocol (JSON unless noted; errors are `{"error": message}` with status 400/500):
  GET  /health          {"engine", "model", "tokenizer": fingerprint, "model_shape": {...}, "dtype"}
  POST /generate        {"prompts": [[ids]], "sampling": Sampling fields, "stop_ids": [ids], "logprobs": bool}
                        -> {"completions": [[{"token_ids", "finished", "logprobs"}]]}
  POST /update_weights  body: safetensors bytes of some of the weights (Hugging Face names) -> {"loaded": count};
                        vLLM drops its prefix cache with every push
"""

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, fields

from rlhfx.engines import Completion, Engine, Sampling, split_completion
from rlhfx.errors import RlhfxError

CHUNK_BYTES = 256 * 2**20  # one /update_weights request carries at most this much (one larger tensor goes alone)
CHECK_PROMPT = "The weights were pushed. Say something:"
CHECK_TOKENS = 16
CHECK_LOGIT_GAP = 0.5  # logits: room for another precision's rounding; other weights move them by far more
# config.json fields that fix the weights' names and shapes: a server on a model that differs in one of them
# cannot take the policy's weights
SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the vocabulary (added tokens included) and the special tokens: equal on both sides iff the
    token ids mean the same."""
    vocab = sorted(tokenizer.get_vocab().items())
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]
    return hashlib.sha256(json.dumps([vocab, specials]).encode()).hexdigest()[:16]


def model_shape(config) -> dict:
    """The SHAPE_FIELDS of a transformers config (or a config.json dict)."""
    values = config if isinstance(config, dict) else config.to_dict()
    text = values.get("text_config") or {}
    return {name: values.get(name, text.get(name)) for name in SHAPE_FIELDS}


def server_url(args) -> str:
    return (args.vllm_server_base_url or f"http://{args.vllm_server_host}:{args.vllm_server_port}").rstrip("/")


def restart_fix(url: str) -> str:
    return (f"start (or restart) the server: `rlhfx rollout --model MODEL --port PORT` (the trainer's --model; here "
            f"{url}), then resume from the last checkpoint: --resume_from_checkpoint latest.")


def wait_for_server(url: str, timeout: float) -> dict:
    """The server's /health answer, polling until it is up (vLLM may still be loading) or `timeout` passes."""
    deadline, error = time.time() + timeout, None
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=max(1.0, min(10.0, timeout))) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as failure:
            error = failure
        if time.time() >= deadline:
            raise RlhfxError(f"--vllm_mode server: no rollout server answers at {url} after {timeout:g} s "
                             f"({_reason(error)}).", "start one first: `rlhfx rollout --model MODEL --port PORT`, and "
                             "point --vllm_server_host/--vllm_server_port (or --vllm_server_base_url) at it; a server "
                             "still loading needs a larger --vllm_server_timeout.")
        time.sleep(0.5)


def _reason(error) -> str:
    return str(getattr(error, "reason", None) or error)


class RemoteEngine(Engine):
    name = "server"

    def __init__(self, url: str, tokenizer, stop_ids: list[int], policy=None, timeout: float = 240.0,
                 check_every: int = 1, logprobs: bool = False, sends: bool = True, agree=None):
        """policy: the trainer's model, whose greedy answer a push is checked against (every `check_every`th push,
        the first always; 0: never). Under torchrun every rank has its own client but one server takes the weights:
        only the rank with `sends` pushes them, and `agree(failed) -> whether any rank failed` (a collective) makes
        the others wait until the push is done."""
        from rlhfx.engines.pt import PtEngine

        self.url, self.tokenizer, self.stop_ids, self.logprobs = url, tokenizer, stop_ids, logprobs
        self.check_every, self.pushes, self.sends = check_every, 0, sends
        self.agree = agree or (lambda failed: failed)
        self.info = wait_for_server(url, timeout)
        self.reference = PtEngine(policy, tokenizer, stop_ids=stop_ids) if policy is not None else None
        self._check_same_model(policy)

    def _check_same_model(self, policy) -> None:
        served = self.info.get("model")
        if self.info.get("tokenizer") != tokenizer_fingerprint(self.tokenizer):
            raise RlhfxError(f"The rollout server at {self.url} serves {served} with another tokenizer than this run's "
                             "(different vocabulary or special tokens), so the token ids would mean other words.",
                             "start the server on the trainer's --model: `rlhfx rollout --model MODEL`.")
        theirs, ours = self.info.get("model_shape") or {}, model_shape(policy.config) if policy is not None else {}
        differ = [f"{k} {theirs[k]} vs {ours[k]}" for k in ours if None not in (theirs.get(k), ours[k]) and theirs[k] != ours[k]]
        if differ:
            raise RlhfxError(f"The rollout server at {self.url} serves {served}, a model of another shape than the "
                             f"policy ({', '.join(differ)}): it cannot take the policy's weights.",
                             "start the server on the trainer's --model (its base model under LoRA): "
                             "`rlhfx rollout --model MODEL`.")

    def _post(self, path: str, body: bytes, what: str, content_type: str = "application/json") -> dict:
        request = urllib.request.Request(f"{self.url}{path}", data=body, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            message = error.read().decode(errors="replace")
            try:
                message = json.loads(message)["error"]
            except (ValueError, KeyError, TypeError):
                pass
            raise RlhfxError(f"The rollout server at {self.url} refused {what}: {message}",
                             "check that it serves the trainer's --model (`rlhfx rollout --model MODEL`); its log "
                             "has the details.") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise RlhfxError(f"The rollout server at {self.url} stopped answering during {what} ({_reason(error)}); "
                             "no update was made from this step.", restart_fix(self.url)) from None

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        sampling.check()
        body = json.dumps({"prompts": [list(map(int, p)) for p in prompts], "sampling": asdict(sampling),
                           "stop_ids": self.stop_ids, "logprobs": self.logprobs}).encode()
        out = self._post("/generate", body, f"generation of {len(prompts)} prompts")["completions"]
        return [[split_completion(self.tokenizer, c["token_ids"], self.stop_ids, c.get("logprobs")) for c in row]
                for row in out]

    def update_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        """The sending rank pushes the weights in chunks of about CHUNK_BYTES, cast to the server's dtype; every rank
        walks them (under ZeRO-3 each is gathered by all ranks together) and waits until the push is done, so no rank
        generates with the old weights; then each checks the push (see `check_every`)."""
        named, error = iter(named_tensors), None
        if self.sends:
            try:
                self._send(named)
            except RlhfxError as failure:
                error = failure
        for _ in named:  # the other ranks', or what a failed push left
            pass
        if self.agree(error is not None):
            raise error or RlhfxError(f"The weight push to the rollout server at {self.url} failed on the main rank "
                                      "(its error is above).", restart_fix(self.url))
        self.pushes += 1
        if self.reference is not None and self.check_every and (self.pushes - 1) % self.check_every == 0:
            self.check_push()

    def _send(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        import torch
        from safetensors.torch import save

        dtype = getattr(torch, self.info.get("dtype") or "float32")
        chunk, size = {}, 0
        for name, tensor in named_tensors:
            tensor = tensor.detach().to("cpu", dtype, copy=True).contiguous()  # a copy: a ZeRO-3 weight is freed next
            chunk[name], size = tensor, size + tensor.numel() * tensor.element_size()
            if size >= CHUNK_BYTES:
                self._push(chunk, save)
                chunk, size = {}, 0
        if chunk:
            self._push(chunk, save)

    def _push(self, chunk: dict, save) -> int:
        return self._post("/update_weights", save(chunk), f"a weight push ({len(chunk)} tensors)",
                          "application/octet-stream")["loaded"]

    def check_push(self) -> None:
        """The server's greedy answer to CHECK_PROMPT equals the policy's own, token for token; when the server
        computes in another dtype (bf16 vLLM, float32 policy), a near-tie may go the other way, so there each of its
        tokens need only be within CHECK_LOGIT_GAP of the policy's most likely one."""
        prompt = self.tokenizer(CHECK_PROMPT, add_special_tokens=False)["input_ids"]
        greedy = Sampling(n=1, max_new_tokens=CHECK_TOKENS, greedy=True)
        theirs = self.generate([prompt], greedy)[0][0].token_ids
        ours = self.reference.generate([prompt], greedy)[0][0].token_ids
        if theirs != ours and not (self._other_dtype() and self._near_greedy(prompt, theirs)):
            raise RlhfxError(f"After weight push {self.pushes}, the rollout server at {self.url} answers a fixed prompt "
                             f"with other tokens than the policy ({theirs} vs {ours}): it is not generating with the "
                             "policy's weights (another model, or a push that did not take).",
                             "serve the trainer's --model (`rlhfx rollout --model MODEL`) and resume from the last "
                             "checkpoint (--resume_from_checkpoint latest); --vllm_check_weights_every 0 skips the "
                             "check.")

    def _other_dtype(self) -> bool:
        return str(next(self.reference.model.parameters()).dtype).removeprefix("torch.") != self.info.get("dtype")

    def _near_greedy(self, prompt: list[int], tokens: list[int]) -> bool:
        import torch

        model = self.reference.model
        ids = torch.tensor([prompt + tokens], device=next(model.parameters()).device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        gap = logits.max(-1).values - logits.gather(-1, ids[0, len(prompt) :, None])[:, 0]
        return bool((gap <= CHECK_LOGIT_GAP).all())

    def sleep(self) -> None:
        """The server's memory is not the trainer's: nothing to release."""

    def wake_up(self) -> None:
        pass


def sampling_from_json(values: dict) -> Sampling:
    """The server side of `asdict(sampling)`: unknown keys are refused rather than silently ignored."""
    known = {f.name for f in fields(Sampling)}
    unknown = set(values) - known
    if unknown:
        raise RlhfxError(f"Unknown sampling fields {sorted(unknown)}.", "use the same rlhfx version on both sides.")
    return Sampling(**values)
