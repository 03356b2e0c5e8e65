"""Rule-based reward sources: `--reward_func demo` or `--reward_func my_reward.py`.

A reward function has OpenRLHF's custom-reward signature

    reward_func(queries: list[str], prompts: list[str], labels: list[str | None]) -> list[float]

where `queries[i]` is the prompt text followed by the response, `prompts[i]` the prompt text (so the
response is `queries[i][len(prompts[i]):]`) and `labels[i]` the dataset's reference label (or None).
"""

import importlib.util
import math
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from rlhfx.errors import RlhfxError

RewardFunc = Callable[[list[str], list[str], list], list[float]]


def demo_reward_func(queries: list[str], prompts: list[str], labels: list) -> list[float]:
    """The demo task's rule-based reward (rlhfx.registry.demo_task.reward) of each response."""
    from rlhfx.registry.demo_task import reward

    if any(label is None for label in labels):
        raise RlhfxError("--reward_func demo needs each prompt's label ('colour animal'), and some rows have none.",
                         "sample from demo-prompts (or a file with a 'label' column).")
    return [reward(q[len(p):], label) for q, p, label in zip(queries, prompts, labels)]


def load_reward_func(spec: str) -> RewardFunc:
    """`demo`, or a Python file defining `reward_func(queries, prompts, labels)`."""
    if spec == "demo":
        return demo_reward_func
    path = Path(spec)
    if path.suffix != ".py":
        raise RlhfxError(f"--reward_func {spec!r} is neither `demo` nor a .py file.",
                         "pass `demo` or a Python file that defines reward_func(queries, prompts, labels).")
    if not path.is_file():
        raise RlhfxError(f"Reward function file {spec} does not exist.", "check the path passed to --reward_func.")
    module = import_user_file(path, f"reward function file {spec}")
    func = getattr(module, "reward_func", None)
    if not callable(func):
        raise RlhfxError(f"{spec} defines no function `reward_func`.",
                         "define reward_func(queries, prompts, labels) -> list[float] in it.")
    return func


def guarded_call(func: RewardFunc, call_args: tuple, name: str, timeout: float | None):
    """`func(*call_args)` with its exceptions and a hang turned into clear errors. It runs in a daemon thread so a
    hang can be given up on: the run then stops with the error, and the thread ends with the process."""
    result = {}

    def target():
        try:
            result["value"] = func(*call_args)
        except BaseException as error:  # noqa: BLE001 (handed to the caller's thread)
            result["error"] = error

    thread = threading.Thread(target=target, name=f"reward_func {name}", daemon=True)
    thread.start()
    thread.join(timeout)
    where = f"{getattr(func, '__name__', 'reward_func')} in {name}"
    if thread.is_alive():
        raise RlhfxError(f"Reward function {where} did not return within {timeout:g} seconds "
                         f"(--reward_func_timeout) for {len(call_args[0])} queries.",
                         "find what hangs in it (a network call, a subprocess, a lock), or raise --reward_func_timeout.")
    error = result.get("error")
    if isinstance(error, RlhfxError):
        raise error
    if error is not None:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
        line = f" (line {frames[-1].lineno} of {frames[-1].filename})" if frames else ""
        raise RlhfxError(f"Reward function {where} raised {type(error).__name__}: {error}{line}.",
                         "fix the function (call it by hand on a few queries to see the full traceback).") from None
    return result["value"]


def call_reward_func(func: RewardFunc, queries: list[str], prompts: list[str], labels: list, name: str,
                     timeout: float | None = None) -> list[float]:
    """Call `func` (stopping after `timeout` seconds) and check it returned one finite number per query."""
    scores = guarded_call(func, (queries, prompts, labels), name, timeout)
    try:
        scores = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise RlhfxError(f"Reward function {name} returned {type(scores).__name__} values that are not numbers.",
                         "return a list of floats, one per query.") from None
    if len(scores) != len(queries):
        raise RlhfxError(f"Reward function {name} returned {len(scores)} scores for {len(queries)} queries.",
                         "return one score per query, in order.")
    bad = next((i for i, s in enumerate(scores) if not math.isfinite(s)), None)
    if bad is not None:
        raise RlhfxError(f"Reward function {name} returned {scores[bad]} for query {bad}.", "return finite numbers.")
    return scores


def import_user_file(path: Path, what: str):
    """Run a user's Python file as a module; an error while importing it is one clear message naming the file."""
    module_spec = importlib.util.spec_from_file_location(f"rlhfx_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        raise RlhfxError(f"Importing {what} failed: {type(error).__name__}: {error}",
                         "fix the file (run it with python to see the traceback).") from None
    return module
