"""Named datasets: `--dataset NAME` resolves here to a bundled file or a hub id, its columns and kind.

Adding a named dataset is one `DatasetEntry` in `_ENTRIES`; nothing else changes.
"""

from dataclasses import dataclass
from pathlib import Path

DEMO_DATA_DIR = Path(__file__).parent / "demo_data"


@dataclass(frozen=True)
class DatasetEntry:
    """One named dataset.

    source: `bundled:FILE` (a file in `rlhfx/registry/demo_data/`) or a hub id `org/name[:subset]`.
    kind: the canonical kind the rows naturally give (sft | pairwise | unpaired | prompt | process).
    columns: renames applied to every row before format detection, `{source_key: rlhfx_key}`.
    val_source: a bundled validation file used when the user asks for no other validation data.
    split: the hub split read as training data.
    """

    name: str
    source: str
    kind: str
    columns: dict[str, str] | None = None
    val_source: str | None = None
    description: str = ""
    split: str = "train"


def _demo(name: str, stem: str, kind: str, description: str) -> DatasetEntry:
    return DatasetEntry(name, f"bundled:{stem}_train.jsonl", kind, None, f"bundled:{stem}_val.jsonl", description)


_ENTRIES = [
    _demo("demo-sft", "demo_sft", "sft", "Tiny bundled chat conversations for smoke tests."),
    _demo("demo-pref", "demo_pref", "pairwise", "Tiny bundled prompt/chosen/rejected pairs for smoke tests."),
    _demo("demo-kto", "demo_kto", "unpaired", "Tiny bundled prompt/completion/label rows for smoke tests."),
    _demo("demo-prompts", "demo_prompts", "prompt", "Tiny bundled prompts with reference answers for smoke tests."),
    _demo("demo-math", "demo_math", "prompt", "Additions of digits 0-4 with solutions, for GRPO with --reward_funcs accuracy format."),
    _demo("demo-math-sft", "demo_math_sft", "sft", "demo-math's warm-up: answers in <think>/<answer> format, the right sum 30% of the time, else off by one."),
    _demo("demo-prm", "demo_prm", "process", "Tiny bundled reasoning steps with good/bad step labels (process reward models)."),
    DatasetEntry(
        "hh-rlhf", "Anthropic/hh-rlhf", "pairwise",
        description="Anthropic helpful/harmless pairs; chosen/rejected are 'Human:/Assistant:' transcripts.",
    ),
    DatasetEntry(
        "ultrafeedback-binarized", "HuggingFaceH4/ultrafeedback_binarized", "pairwise",
        description="UltraFeedback binarized preferences (chosen/rejected are whole conversations).",
        split="train_prefs",
    ),
    DatasetEntry(
        "ultrafeedback-kto", "trl-lib/kto-mix-14k", "unpaired",
        description="KTO mix of 14k prompt/completion/label rows built from UltraFeedback and others.",
    ),
    DatasetEntry(
        "swift/self-cognition", "modelscope/self-cognition", "sft",
        description="ms-swift's self-cognition questions; --model_name/--model_author fill its {{NAME}}/{{AUTHOR}}.",
    ),
    DatasetEntry(
        "alpaca", "tatsu-lab/alpaca", "sft",
        description="Stanford Alpaca instruction/input/output rows.",
    ),
    DatasetEntry(
        "shareai-llama3-dpo-zh-en-emoji", "shareAI/DPO-zh-en-emoji", "pairwise",
        columns={"question": "query", "answer_zh": "response", "answer_en": "rejected_response"},
        description="Prefers the Chinese, emoji-rich answer over the English one (ms-swift's DPO example).",
    ),
    DatasetEntry(
        "OpenRLHF/preference_dataset_mixture2_and_safe_pku", "OpenRLHF/preference_dataset_mixture2_and_safe_pku",
        "pairwise", description="OpenRLHF reward-model mixture; chosen/rejected are whole conversations.",
    ),
    DatasetEntry(
        "OpenRLHF/prompt-collection-v0.1", "OpenRLHF/prompt-collection-v0.1", "prompt",
        columns={"context_messages": "prompt"},
        description="OpenRLHF PPO prompt collection (prompts are message lists).",
    ),
]

_BY_NAME = {e.name: e for e in _ENTRIES}


def get_dataset_entry(name: str) -> DatasetEntry | None:
    return _BY_NAME.get(name)


def dataset_names() -> list[str]:
    return list(_BY_NAME)


def bundled_path(source: str) -> Path | None:
    """The file a `bundled:FILE` source points to, or None for any other source."""
    if not source.startswith("bundled:"):
        return None
    return DEMO_DATA_DIR / source.removeprefix("bundled:")
