"""ms-swift flags that stand for another rlhfx setting, mapped onto it right after parsing (before any check).

--use_vllm true = --engine vllm (--vllm_mode colocate or server); TRL's --vllm_enable_sleep = --sleep_level 1;
--attn_impl flash_attn = --flash_attn; --system FILE.txt reads the file (as ms-swift does); online RL's --beta =
--kl_coef. Flags whose effect rlhfx has by construction are accepted with a one-line note saying so. Nothing heavy
is imported here.
"""

import os
from pathlib import Path

from rlhfx.errors import RlhfxError

NOTES = {
    "load_from_cache_file": "rlhfx keeps no preprocessing cache: rows are read and encoded afresh every run, so the "
                            "data is the same either way.",
}


def apply_swift_flags(args) -> list[str]:
    """Rewrite args.values in place; returns the notes to print (one line per flag)."""
    values, explicit = args.values, args.explicit
    _vllm(values, explicit)
    if values.get("attn_impl") in ("flash_attn", "flash_attention_2"):
        values["flash_attn"] = True
    system = values.get("system")
    if system and system.endswith(".txt"):
        if not Path(system).is_file():
            raise RlhfxError(f"--system {system} names a .txt file that does not exist.",
                             "fix the path, or pass the system prompt itself.")
        values["system"] = Path(system).read_text(encoding="utf-8")
    if "beta" in explicit and values.get("rlhf_type") in ("ppo", "grpo", "rloo", "reinforce_pp"):
        if "kl_coef" in explicit and values["kl_coef"] != values["beta"]:
            raise RlhfxError(f"--beta {values['beta']} and --kl_coef {values['kl_coef']} both set the KL coefficient "
                             "of online RL.", "give one of them.")
        values["kl_coef"] = values["beta"]
        explicit.add("kl_coef")
    return [f"--{name}: {note}" for name, note in NOTES.items() if name in explicit]


def _vllm(values: dict, explicit: set) -> None:
    if "use_vllm" not in values:
        return
    if values["vllm_enable_sleep"]:  # TRL's name for vLLM's sleep mode: --sleep_level 1
        if "sleep_level" in explicit and values["sleep_level"] == 0:
            raise RlhfxError("--vllm_enable_sleep true and --sleep_level 0 contradict each other.", "give one of them.")
        values["sleep_level"] = values["sleep_level"] or 1
        explicit.add("sleep_level")
    if values["vllm_mode"] is not None and not values["use_vllm"] and values["engine"] != "vllm":
        raise RlhfxError(f"--vllm_mode {values['vllm_mode']} is given without --use_vllm true.",
                         "add --use_vllm true (or --engine vllm), or drop --vllm_mode.")
    if not values["use_vllm"]:
        return
    if "engine" in explicit and values["engine"] != "vllm":
        raise RlhfxError(f"--use_vllm true and --engine {values['engine']} disagree.", "give one of them.")
    values["engine"] = "vllm"


def print_notes(notes: list[str]) -> None:
    if notes and int(os.environ.get("RANK", "0")) == 0:
        from rich.console import Console

        for note in notes:
            Console().print(f"[yellow]note:[/yellow] {note}", highlight=False)
