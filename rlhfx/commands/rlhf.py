"""`rlhfx rlhf --rlhf_type NAME`: preference and RL training; NAME is looked up in rlhfx.algos."""

SUMMARY = "Preference / RL training selected with --rlhf_type."


def main(argv: list[str]) -> None:
    from rlhfx.arguments import print_help

    if "--help" in argv or "-h" in argv:
        return print_help("rlhf", SUMMARY, _requested_type(argv))
    from rlhfx.algos.job import train

    train(parse(argv))


def parse(argv: list[str]):
    """The parsed flags, each one checked to apply to --rlhf_type (rlhfx.launch checks them before starting ranks)."""
    from rlhfx.arguments import parse_args

    args = parse_args("rlhf", argv)
    check_flags_apply(args)
    return args


def _requested_type(argv: list[str]) -> str | None:
    """The --rlhf_type given next to --help, so the help can show only its flags."""
    from rlhfx.algos import ALGOS

    for i, token in enumerate(argv):
        value = token.split("=", 1)[1] if token.startswith("--rlhf_type=") else (
            argv[i + 1] if token == "--rlhf_type" and i + 1 < len(argv) else None)
        if value in ALGOS:
            return value
    return None


def check_flags_apply(args) -> None:
    """A flag given for another algorithm (say --rpo_alpha with kto) is a mistake, not something to ignore."""
    from rlhfx.algos import get_algo
    from rlhfx.arguments import flags_for
    from rlhfx.errors import RlhfxError

    get_algo(args.rlhf_type)  # an unknown name fails as such, with a suggestion
    for flag in flags_for("rlhf"):
        if flag.name in args.explicit and flag.algos is not None and args.rlhf_type not in flag.algos:
            raise RlhfxError(f"--{flag.name} does not apply to --rlhf_type {args.rlhf_type}; it is used by "
                             f"{', '.join(flag.algos)}.",
                             f"drop it (`rlhfx rlhf --rlhf_type {args.rlhf_type} --help` lists the flags that apply).")
