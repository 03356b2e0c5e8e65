"""`rlhfx rollout`: serve generation from a vLLM engine for trainers run with `--vllm_mode server`.

`rlhfx rollout --model M --port P` loads M once; a trainer (`rlhfx rlhf --rlhf_type grpo --use_vllm true
--vllm_mode server --vllm_server_port P ...`) sends token-id prompts, gets token ids back, and pushes the
policy's weights after every update. The protocol is plain HTTP (rlhfx.engines.remote describes it); requests are
served one at a time, by one engine. On GPUs the weights travel over HTTP too in this version (no NCCL group yet),
so a push costs a copy through host memory. The server has no authentication: keep it on a private network.
"""

import json
import sys
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer

from rlhfx.errors import RlhfxError

SUMMARY = "Serve generation from vLLM for `rlhfx rlhf --vllm_mode server` (prompts in, tokens out, weights pushed)."


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if "--help" in argv or "-h" in argv:
        return print_help("rollout", SUMMARY)
    args = parse_args("rollout", argv)
    if args.dp_size != 1:
        raise RlhfxError(f"--dp_size {args.dp_size}: a server runs one engine in this version.",
                         "use --dp_size 1 (and --tp_size to spread a large model over GPUs).")
    if args.model is None:
        raise RlhfxError("No model given.", "pass --model: the trainer's --model (its base model under LoRA).")
    from rlhfx.engines import check_engine_available
    from rlhfx.training.runner import quiet_libraries

    check_engine_available(args.engine)
    quiet_libraries()
    engine, info = load_engine(args)
    try:
        server = HTTPServer((args.host, args.port), handler(engine, info))
    except OSError as error:
        engine.close()
        raise RlhfxError(f"rlhfx rollout cannot listen on {args.host}:{args.port}: {error.strerror or error}.",
                         "pick a free --port (and the trainer's --vllm_server_port to match).") from None
    print(f"rlhfx rollout: serving {info['model']} ({info['engine']}, {info['dtype']}) on "
          f"http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()


def load_engine(args):
    """The engine on --model, and what /health tells a trainer about it (the tokenizer and shape it checks)."""
    from pathlib import Path

    from rlhfx.engines import make_engine, stop_token_ids
    from rlhfx.engines.remote import model_shape, tokenizer_fingerprint
    from rlhfx.models import load_causal_lm, load_tokenizer, resolve_model_path

    path = resolve_model_path(args.model, args.model_type)
    if (Path(path) / "adapter_config.json").is_file():
        raise RlhfxError(f"--model {args.model} is a LoRA adapter; the trainer pushes merged weights onto its base.",
                         "serve the base model (the trainer's --model, or the adapter's base_model_name_or_path).")
    tokenizer = load_tokenizer(path)
    stops = stop_token_ids(tokenizer)  # each request brings the trainer's own stop ids
    if args.engine == "pt":
        import torch

        model = load_causal_lm(path, args.torch_dtype)
        model = model.to("cuda") if torch.cuda.is_available() else model
        engine, config, dtype = make_engine("pt", model=model, tokenizer=tokenizer, stop_ids=stops), model.config, model.dtype
    else:
        from transformers import AutoConfig

        engine = make_engine("vllm", model_path=path, tokenizer=tokenizer, stop_ids=stops, dtype=args.torch_dtype,
                             seed=args.seed, tp_size=args.tp_size, enable_prefix_caching=args.enable_prefix_caching,
                             max_num_seqs=args.max_num_seqs, gpu_memory_utilization=args.gpu_memory_utilization,
                             kv_cache_memory_gb=args.kv_cache_memory_gb, max_model_len=args.max_model_len, logprobs=True)
        config, dtype = AutoConfig.from_pretrained(path), engine.llm.llm_engine.model_config.dtype
    info = {"engine": args.engine, "model": str(args.model), "tokenizer": tokenizer_fingerprint(tokenizer),
            "model_shape": model_shape(config), "dtype": str(dtype).removeprefix("torch.")}
    return engine, info


def handler(engine, info: dict):
    """The request handler class serving `engine` (HTTPServer serves one request at a time: the engine is not
    shared between threads)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                return self._reply(200, info)
            self._reply(404, {"error": f"no GET {self.path}"})

        def do_POST(self):
            routes = {"/generate": self._generate, "/update_weights": self._update_weights}
            route = routes.get(self.path)
            if route is None:
                return self._reply(404, {"error": f"no POST {self.path}"})
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                self._reply(200, route(body))
            except RlhfxError as error:
                self._reply(400, {"error": f"{error.what} {error.fix or ''}".strip()})
            except Exception as error:  # reported to the trainer, which stops with it; the server keeps serving
                traceback.print_exc()
                self._reply(500, {"error": f"{type(error).__name__}: {error}"})

        def _generate(self, body: bytes) -> dict:
            from rlhfx.engines.remote import sampling_from_json

            request = json.loads(body)
            if request.get("logprobs") and not getattr(engine, "logprobs", False):
                raise RlhfxError("This server (--engine pt) returns no log-probs, which --enable_vllm_is_correction "
                                 "needs.", "serve with --engine vllm, or drop --enable_vllm_is_correction.")
            engine.stop_ids = [int(i) for i in request["stop_ids"]]
            out = engine.generate(request["prompts"], sampling_from_json(request["sampling"]))
            keep = bool(request.get("logprobs"))
            return {"completions": [[{"token_ids": c.token_ids, "finished": c.finished,
                                      "logprobs": c.logprobs if keep else None} for c in row] for row in out]}

        def _update_weights(self, body: bytes) -> dict:
            from safetensors.torch import load

            tensors = load(body)
            engine.update_weights(tensors.items())
            return {"loaded": len(tensors)}

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # one line per request on stderr, as http.server does, minus /health polls
            if "/health" not in self.requestline:
                sys.stderr.write(f"rollout: {self.requestline} -> {args[1] if len(args) > 1 else ''}\n")

    return Handler
