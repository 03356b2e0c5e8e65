"""`rlhfx sft`: supervised fine-tuning."""

SUMMARY = "Supervised fine-tuning, full or LoRA, with assistant-only loss masks."


def main(argv: list[str]) -> None:
    from rlhfx.arguments import print_help

    if "--help" in argv or "-h" in argv:
        return print_help("sft", SUMMARY)
    from rlhfx.algos.job import train

    train(parse(argv))


def parse(argv: list[str]):
    """The parsed flags (rlhfx.launch checks them before starting ranks)."""
    from rlhfx.arguments import parse_args

    return parse_args("sft", argv)
