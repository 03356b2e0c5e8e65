"""`rlhfx sft`: supervised fine-tuning."""

SUMMARY = "Supervised fine-tuning, full or LoRA, with assistant-only loss masks."


def main(argv: list[str]) -> None:
    from rlhfx.arguments import parse_args, print_help

    if "--help" in argv or "-h" in argv:
        return print_help("sft", SUMMARY)
    args = parse_args("sft", argv)
    from rlhfx.algos.job import train

    train(args)
