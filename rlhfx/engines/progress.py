"""Generate many prompts through an engine in chunks, with a rich progress bar showing samples/s."""

import time

from rlhfx.engines import Completion, Engine, Sampling


def generate_with_progress(engine: Engine, prompts: list[list[int]], sampling: Sampling, chunk: int,
                           label: str = "generate", console=None) -> tuple[list[list[Completion]], float]:
    """(completions per prompt, seconds). Each chunk of prompts is one engine call; with a seed, chunk k
    is sampled with seed + k so chunks differ and a run is reproducible."""
    from dataclasses import replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    results: list[list[Completion]] = []
    start = time.time()
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=len(prompts), rate="")
        for k, first in enumerate(range(0, len(prompts), chunk)):
            seed = None if sampling.seed is None else sampling.seed + k * 1_000_003
            results += engine.generate(prompts[first : first + chunk], replace(sampling, seed=seed))
            seconds = max(time.time() - start, 1e-9)
            samples = len(results) * sampling.n
            progress.update(task, completed=len(results), rate=f"{samples / seconds:.1f} samples/s")
    return results, time.time() - start
