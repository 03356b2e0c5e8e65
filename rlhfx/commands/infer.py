"""`rlhfx infer`: chat with a model, or answer a file of prompts.

Interactive (no --input_file / --dataset / --val_dataset): read messages from stdin, stream each answer
(pt engine), keep the conversation; `/clear` starts over, `/exit` (or end of input) quits.
Batch: answer every prompt, write JSONL rows `{"prompt": messages, "response": text, "finished": bool}`
(+ `"responses"`: all samples when --best_of_n > 1, and the row's `"label"` when it has one).
"""

import time
from pathlib import Path

from rlhfx.errors import RlhfxError

SUMMARY = "Chat with a model (streaming) or answer a file of prompts in batch; engines pt or vllm."
DEFAULT_BATCH_SIZE = 16


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if "--help" in argv or "-h" in argv:
        return print_help("infer", SUMMARY)
    args = parse_args("infer", argv)
    from rlhfx.engines.loading import sampling_from_args
    from rlhfx.models import apply_run_system

    apply_run_system(args)
    sampling = sampling_from_args(args)
    batch = bool(args.input_file or args.dataset or args.val_dataset)
    prompts = load_prompts(args) if batch else None  # bad input files fail before a model loads
    output = Path(args.output_file or f"output/infer/{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    if batch:
        from rlhfx.training.outputs import check_can_create

        check_can_create(output, "--output_file")
    from rlhfx.training.runner import quiet_libraries

    quiet_libraries()
    from rlhfx.engines import check_engine_available
    from rlhfx.engines.loading import EngineOptions, load_generator
    from rlhfx.models import model_spec_from_args

    batch_size = args.batch_size if "batch_size" in args.explicit else DEFAULT_BATCH_SIZE
    check_engine_available(args.engine)
    generator = load_generator(model_spec_from_args(args), EngineOptions.from_args(args), batch_size)
    try:
        if batch:
            run_batch(args, generator, prompts, sampling, batch_size, output)
        else:
            chat(args, generator, sampling)
    finally:
        generator.engine.close()


def load_prompts(args) -> list[dict]:
    """Rows `{"prompt": messages, "label": ...}` from --input_file, else --val_dataset, else --dataset."""
    from rlhfx.data.loader import DataConfig, load_data

    if args.input_file and Path(args.input_file).suffix.lower() == ".txt":
        path = Path(args.input_file)
        if not path.is_file():
            raise RlhfxError(f"--input_file {path} does not exist.", "check the path.")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise RlhfxError(f"--input_file {path} is empty.", "write one prompt per line.")
        system = [{"role": "system", "content": args.system}] if args.system else []
        if args.input_template:  # the data layer's raw form: the template's text is the whole prompt
            prefix = args.system + "\n" if args.system else ""
            prompts = [[{"role": "user", "content": args.input_template.replace("{}", prefix + line), "raw": True}]
                       for line in lines]
        else:
            prompts = [system + [{"role": "user", "content": line}] for line in lines]
        rows = [{"prompt": prompt, "label": None} for prompt in prompts]
        return rows[: args.max_samples] if args.max_samples else rows
    specs = [args.input_file] if args.input_file else (args.val_dataset or args.dataset)
    config = DataConfig(datasets=specs, kind="prompt", max_samples=args.max_samples, seed=args.seed,
                        prompt_key=args.prompt_key, label_key=args.label_key, messages_key=args.messages_key,
                        columns=args.columns, system=args.system, input_template=args.input_template)
    rows, _, report = load_data(config)
    for line in report.summary_lines():
        print(f"  data: {line}")
    return rows


def run_batch(args, generator, rows: list[dict], sampling, batch_size: int, output: Path) -> None:
    from rich.console import Console

    from rlhfx.engines.progress import generate_with_progress
    from rlhfx.sampling.jsonl import write_jsonl_atomic

    console = Console(stderr=True, markup=False)
    prompt_ids = [generator.encoder.encode_prompt(row["prompt"]) for row in rows]
    chunk = batch_size * 4 if args.engine == "pt" else 1024
    results, seconds = generate_with_progress(generator.engine, prompt_ids, sampling, chunk, "infer", console)
    out = []
    for row, completions in zip(rows, results):
        item = {"prompt": row["prompt"], "response": completions[0].text, "finished": completions[0].finished}
        if sampling.n > 1:
            item["responses"] = [c.text for c in completions]
        if row.get("label") is not None:
            item["label"] = row["label"]
        out.append(item)
    write_jsonl_atomic(output, out)
    samples = len(rows) * sampling.n
    console.print(f"rlhfx infer: {len(rows)} prompts x {sampling.n} = {samples} answers in {seconds:.1f} s "
                  f"({samples / max(seconds, 1e-9):.1f} samples/s, engine {args.engine}) -> {output}", highlight=False)


def chat(args, generator, sampling) -> None:
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    print(f"rlhfx infer: chatting with {generator.spec.display} (engine {args.engine}). "
          "Type a message; /clear starts a new conversation, /exit quits.", flush=True)
    while True:
        try:
            text = input("<<< ")
        except (EOFError, KeyboardInterrupt):
            print()
            break
        command = text.strip()
        if command in ("/exit", "/quit"):
            break
        if command == "/clear":
            history = []
            print("(conversation cleared)", flush=True)
            continue
        if not command:
            continue
        messages = system + history + [{"role": "user", "content": text}]
        prompt = generator.encoder.encode_prompt(messages)
        print(">>> ", end="", flush=True)
        if sampling.n == 1:
            answer = ""
            for piece in generator.engine.stream(prompt, sampling):
                answer += piece
                print(piece, end="", flush=True)
            print(flush=True)
        else:
            completions = generator.engine.generate([prompt], sampling)[0]
            for i, completion in enumerate(completions, 1):
                print(f"\n[{i}/{sampling.n}] {completion.text}", flush=True)
            answer = completions[0].text
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
