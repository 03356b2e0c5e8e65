"""Shared test fixtures: small local tokenizers and models, no hub access."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# The suite's numbers are calibrated in float32 on a CPU: losses against hand-computed values to 1e-5, learning
# thresholds on the tiny model, CPU-only errors. On a GPU machine rlhfx would train in bf16 and miss them, so the
# suite hides the GPUs from itself and from the rlhfx processes it starts; tests/test_gpu.py hands them back.
_VISIBLE_GPUS = os.environ.get("CUDA_VISIBLE_DEVICES")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

# Under pytest-xdist (scripts/test.sh) each worker, and each rlhfx process it starts, gets its share of the cores:
# with torch's default of one thread per core, N workers spin N x cores threads, and a tiny model's step on an
# oversubscribed CPU is 2-50x slower.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# Files whose module-scoped fixture is a training run: their tests stay on one xdist worker (--dist loadgroup) so
# the run is made once.
ONE_WORKER_FILES = {"test_e2e_distributed.py", "test_rl_distributed.py", "test_grpo_math.py", "test_flag_wiring.py",
                    "test_rl_ray.py"}


def gpu_env() -> dict | None:
    """The environment that gives an rlhfx run the machine's GPUs back; None when it has none."""
    if _VISIBLE_GPUS is not None:
        return {"CUDA_VISIBLE_DEVICES": _VISIBLE_GPUS} if _VISIBLE_GPUS.strip() else None
    if not shutil.which("nvidia-smi"):
        return None
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.splitlines()
    count = sum(line.startswith("GPU ") for line in listed)
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(count)))} if count else None

# ChatML with {% generation %} markers around what the assistant must learn: its answer and <|im_end|>.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_tokenizer(special_tokens, chat_template, eos_token, bos_token=None, pad_token=None, vocab_size=300):
    """A byte-level BPE tokenizer trained on a few sentences, with the given special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys([*special_tokens, *(t for t in (eos_token, bos_token, pad_token) if t)]))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(specials),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    sentences = [
        "You are a helpful assistant.",
        "Hello! How are you today?",
        "What is 2+2? It is 4.",
        "The quick brown fox jumps over the lazy dog.",
        "user assistant system",
    ]
    tokenizer.train_from_iterator(sentences, trainer)
    others = [t for t in specials if t not in (eos_token, bos_token, pad_token)]
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos_token, bos_token=bos_token,
                                      pad_token=pad_token, additional_special_tokens=others)
    wrapped.chat_template = chat_template
    return wrapped


@pytest.fixture(scope="session")
def chatml_tokenizer():
    """A byte-level BPE tokenizer (vocab 300) trained on a few sentences, with ChatML special tokens."""
    return make_tokenizer(["<|im_start|>", "<|im_end|>", "<|pad|>"], CHATML_TEMPLATE, "<|im_end|>",
                          pad_token="<|pad|>", vocab_size=297)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills, built once per test session even when pytest-xdist runs the suite in
    several worker processes: the first worker builds it under a lock in the session's shared temporary folder,
    the others wait and reuse it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by all workers of this session
    folder = root / name
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory):
    """The tiny model after a short full SFT on demo-sft (about 12 s), shared by every end-to-end test."""
    from e2e import rlhfx

    def train(folder: Path) -> None:
        rlhfx("sft", "--model", "tiny", "--dataset", "demo-sft", "--train_type", "full", "--max_steps", "300",
              "--batch_size", "16", "--learning_rate", "3e-3", "--val_dataset", "demo-sft#64",
              "--output_dir", folder / "run")

    return built_once(tmp_path_factory, "sft", train) / "run"


# Test files whose features were committed at the end of a session without an uncontended run of the whole
# suite from a fresh clone. They get the `wip` marker, which scripts/test.sh (and so CI) leaves out until the
# next session runs them (`python -m pytest -m wip`), fixes what fails and removes the file from this list.
PENDING_VERIFICATION: set[str] = {
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in PENDING_VERIFICATION:
            item.add_marker(pytest.mark.wip)
        if item.path.name in ONE_WORKER_FILES:
            item.add_marker(pytest.mark.xdist_group(item.path.name))


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory):
    """The tiny model under a name the registry does not know, its tokenizer given SmolLM2's chat template (no
    {% generation %} markers, a default system prompt of its own): what most local fine-tunes look like."""
    from published_templates import SMOLLM2

    return tiny_with_template(tmp_path_factory, "my-chat-model", SMOLLM2)


def tiny_with_template(tmp_path_factory, name: str, chat_template: str) -> Path:
    """A copy of the tiny model named `name` (a name the registry does not know) whose tokenizer has `chat_template`."""
    from transformers import AutoTokenizer

    from rlhfx.registry.tiny import tiny_model_path

    folder = tmp_path_factory.mktemp("models") / name
    shutil.copytree(tiny_model_path(), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder
