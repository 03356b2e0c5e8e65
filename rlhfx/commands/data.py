"""`rlhfx data check --dataset D --rlhf_type T` (or `--kind K`): what a run would make of a dataset, without training.

Per dataset: the layout detected from its first row and the column mapping applied, rows kept and dropped
by reason (the run's own drop report), chosen == rejected pairs, the label balance of unpaired (KTO) rows,
and a length histogram: tokens with --model's tokenizer and template (rows over --max_length counted, as
training would drop them), else characters. Problems that would stop a run (unreadable data, no usable
rows, every row too long) exit with code 2 like any rlhfx error.
"""

import math
import statistics

from rlhfx.errors import RlhfxError

SUMMARY = "`rlhfx data check`: how a dataset is read and normalised, drops by reason, lengths, label balance."
BINS = 8


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if not argv or argv[0] in ("-h", "--help"):
        return print_help("data", "subcommands: check. " + SUMMARY)
    if argv[0] != "check":
        raise RlhfxError(f"Unknown subcommand `rlhfx data {argv[0]}`.", "use `rlhfx data check --dataset D --rlhf_type T`.")
    if "--help" in argv or "-h" in argv:
        return print_help("data", SUMMARY)
    args = parse_args("data", argv[1:])
    kind = row_kind(args)
    if not args.dataset:
        raise RlhfxError("No --dataset given for `rlhfx data check`.", "pass --dataset (a registry name, file or hub id).")
    from rlhfx.data.loader import load_data
    from rlhfx.training.runner import data_config

    args.values.update(dataset_probs=None, val_dataset=None, split_dataset_ratio=0.0)  # flags data check does not take
    for line in layout_lines(args):
        print(line)
    train_rows, val_rows, report = load_data(data_config(args, kind))
    rows = train_rows + (val_rows or [])
    for line in report.summary_lines():
        print(f"  {line}")
    counts = report.counts()
    print(f"drops by reason: {', '.join(f'{r} {n}' for r, n in counts.items()) or 'none'}")
    if kind == "pairwise" or "chosen == rejected" in counts:
        print(f"chosen == rejected: {counts.get('chosen == rejected', 0)} pairs (dropped)")
    if kind == "unpaired":
        good = sum(1 for row in rows if row["label"])
        print(f"label balance: {good} desirable, {len(rows) - good} undesirable ({good / len(rows):.0%} desirable)")
    encoder, choice = model_encoder(args) if args.model else (None, None)
    lengths, unit = row_lengths(kind, rows, encoder)
    if encoder is not None:
        print(f"template: {choice.describe()}")
        if choice.thinking_note:
            print(f"note: {choice.thinking_note}")
        print(f"first row as the model sees it, trained tokens between {MARK[0]} and {MARK[1]}:")
        print(marked_row(kind, rows[0], encoder))
    print_histogram(lengths, unit)
    if unit == "tokens":
        too_long = sum(1 for n in lengths if n > args.max_length)
        print(f"longer than --max_length {args.max_length}: {too_long} of {len(lengths)} rows (training drops them)")
        if too_long == len(lengths):
            raise RlhfxError(f"Every row is longer than --max_length {args.max_length} tokens.",
                             "raise --max_length or shorten the data.")
    print(f"ok: {len(train_rows)} training and {len(val_rows or [])} validation {kind} rows")


def row_kind(args) -> str:
    """--kind, else the data kind of --rlhf_type's algorithm (`sft` names supervised fine-tuning)."""
    if args.kind:
        return args.kind
    if "rlhf_type" not in args.explicit:
        raise RlhfxError("`rlhfx data check` needs to know what the data is for.",
                         "pass --rlhf_type (sft, dpo, kto, rm, prm, ...) or --kind (sft, pairwise, unpaired, prompt, process).")
    from rlhfx.algos import get_algo

    return get_algo(args.rlhf_type).kind


def layout_lines(args) -> list[str]:
    """How each dataset's rows are read: the layout detected from the first row and the columns renamed."""
    from rlhfx.data.formats import detect_format, rename_keys
    from rlhfx.data.loader import DataConfig
    from rlhfx.data.sources import read_dataset

    flag_renames = DataConfig([], "sft", prompt_key=args.prompt_key, chosen_key=args.chosen_key,
                              rejected_key=args.rejected_key, response_key=args.response_key,
                              label_key=args.label_key, messages_key=args.messages_key,
                              columns=args.columns).renames()
    lines = []
    for spec in args.dataset:
        raw = read_dataset(spec)
        renames = {**(raw.columns or {}), **flag_renames}
        first = next((row for row in raw.rows if isinstance(row, dict)), {})
        fmt = detect_format(set(rename_keys(first, renames)))
        mapping = ", ".join(f"{src} -> {dst}" for src, dst in renames.items()) or "none"
        lines.append(f"{spec}: {len(raw.rows)} rows read, layout {fmt or 'unknown'} (first row keys: "
                     f"{', '.join(sorted(first)) or 'none'}); column mapping: {mapping}")
    return lines


def model_encoder(args):
    """(ChatEncoder, TemplateChoice) of --model, as a run on it would encode the data."""
    from rlhfx.models import resolve_model_spec
    from rlhfx.training.runner import quiet_libraries

    quiet_libraries()
    spec = resolve_model_spec(args.model, args.model_type, None, args.template, args.use_chat_template,
                              args.enable_thinking)
    return spec.choice.encoder(spec.tokenizer, args.train_on), spec.choice


def row_lengths(kind: str, rows: list[dict], encoder) -> tuple[list[int], str]:
    """Token lengths as training counts them with a model's encoder, else character lengths."""
    from rlhfx.training.encode import ENCODERS

    if encoder is None:
        return [len(_text(row)) for row in rows], "characters"
    if kind == "prompt":
        return [len(encoder.encode_prompt(row["prompt"])) for row in rows], "tokens"
    return [ENCODERS[kind](row, encoder)[1] for row in rows], "tokens"


MARK = ("[[", "]]")


def marked_row(kind: str, row: dict, encoder) -> str:
    """The row's tokens decoded as training sees them, runs of trained tokens between MARK's brackets."""
    if kind == "sft":
        encoded = encoder.encode_sft(row["messages"])
        ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    else:
        ids = encoder.encode_prompt(row["prompt"])
        answer = {"pairwise": "chosen", "unpaired": "completion"}.get(kind)
        completion = encoder.encode_completion(row["prompt"], row[answer]) if answer else []
        ids, mask = ids + completion, [0] * len(ids) + [1] * len(completion)
    text, start = "", 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            piece = encoder.tokenizer.decode(ids[start:end])
            text += f"{MARK[0]}{piece}{MARK[1]}" if mask[start] else piece
            start = end
    return text


def _text(value) -> str:
    """Every string of a canonical row, joined: what the tokenizer would see, less the template."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "".join(_text(v) for k, v in value.items() if k not in ("role", "label", "labels", "margin", "raw"))
    if isinstance(value, list):
        return "".join(_text(v) for v in value)
    return ""


def print_histogram(lengths: list[int], unit: str) -> None:
    low, high = min(lengths), max(lengths)
    print(f"length in {unit}: min {low}, median {statistics.median(lengths):g}, "
          f"p95 {sorted(lengths)[math.ceil(0.95 * len(lengths)) - 1]}, max {high}")  # nearest rank
    width = max(1, -(-(high - low + 1) // BINS))
    counts = [0] * BINS
    for n in lengths:
        counts[min((n - low) // width, BINS - 1)] += 1
    top = max(counts)
    for i, count in enumerate(counts):
        if low + i * width > high:
            break
        print(f"  {low + i * width:>7}-{low + (i + 1) * width - 1:<7} {count:>7} {'#' * round(40 * count / top)}")
