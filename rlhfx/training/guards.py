"""Stopping a run cleanly: a checkpoint on SIGTERM/SIGINT, and a clear error instead of training on NaN/inf.

Why not transformers' `enable_jit_checkpoint`: it handles SIGTERM only (not Ctrl-C), waits 3 s before acting,
marks a half-written checkpoint with a sentinel file that `get_last_checkpoint` does not read, and lets ranks
stop at different steps. Here the handler only sets a flag; at the next step end every rank agrees on it and
the Trainer's own control flow saves (atomically, see checkpoints.py) and stops.
"""

import signal
import threading

import torch
from transformers import TrainerCallback

from rlhfx.errors import RlhfxError


class Interrupted(RlhfxError):
    """A run stopped by a signal; the CLI exits with 128 + the signal number, as a shell reports a killed process."""

    def __init__(self, signum: int, what: str, fix: str | None = None):
        super().__init__(what, fix)
        self.exit_code = 128 + signum


def any_rank(flag: bool, device) -> bool:
    """True when `flag` is set on any rank (a no-op without torch.distributed), so every rank acts at the same step."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StopOnSignal(TrainerCallback):
    """While entered: the first SIGTERM/SIGINT makes the Trainer save a checkpoint at the end of the current
    step and stop; a second Ctrl-C (SIGINT) stops at once, without a checkpoint. Further SIGTERMs are ignored:
    torchrun answers a Ctrl-C by sending its workers SIGTERM, and a supervisor that cannot wait sends SIGKILL."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise Interrupted(signum, "Stopped by a second SIGINT before the checkpoint was written.",
                              "resume from the previous checkpoint with --resume_from_checkpoint latest.")
        self.signum = self.signum or signum

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(self.signum is not None, args.device):
            self.signum = self.signum or signal.SIGTERM  # another rank got it
            control.should_save = True
            control.should_training_stop = True


def all_finite(tensors: list) -> bool:
    """Whether every value is finite, with one host sync. The total norm first (NaN/inf anywhere makes it so; one
    fused pass, far cheaper than isfinite on every tensor); only when it is not finite, isfinite tells overflow
    from NaN/inf."""
    if torch.isfinite(torch.nn.utils.get_total_norm(tensors)):
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def non_finite_error(step: int, model, learning_rate: float, last_checkpoint, what: str) -> RlhfxError:
    dtype = next(model.parameters()).dtype
    causes = [f"the learning rate is too high (--learning_rate {learning_rate:g}; try 10x lower)"]
    fp16 = "fp16 overflow (the weights are float16: use --torch_dtype bfloat16 or float32)"
    causes.insert(0 if dtype == torch.float16 else 1, fp16)
    causes.append("a bad data row (an empty or extremely long completion, a label out of range)")
    kept = f"the last good checkpoint, {last_checkpoint}, is kept" if last_checkpoint else "no checkpoint was saved"
    return RlhfxError(f"{what} at step {step}; training stopped ({kept}).", "likely causes: " + "; ".join(causes) + ".")


class NonFiniteGuard(TrainerCallback):
    """Raise before an optimizer step whose gradients hold NaN/inf (a NaN/inf loss makes them so): the weights
    and every checkpoint stay finite. transformers alone would log the previous average and train on.

    With fp16 mixed precision the grad scaler skips such steps itself, so the guard stays out of its way.
    The Trainer computes the total gradient norm every step anyway (to clip and log it); `watch` lets the guard
    read that norm instead of passing over every gradient again. Only a non-finite norm costs the full check.
    """

    def __init__(self, last_checkpoint):
        self.last_checkpoint = last_checkpoint  # () -> path of the newest complete checkpoint, or None
        self.params = []
        self.grad_norm = None  # this step's total gradient norm, as the watched Trainer computed it

    def watch(self, trainer) -> None:
        get_grad_norm = getattr(trainer, "_get_grad_norm", None)
        if get_grad_norm is None:  # not a transformers Trainer: the guard checks every gradient itself
            return

        def recorded(*args, **kwargs):  # whatever its signature, only the returned norm is read
            self.grad_norm = get_grad_norm(*args, **kwargs)
            return self.grad_norm

        trainer._get_grad_norm = recorded

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.params = [p for p in model.parameters() if p.requires_grad]  # walking the modules every step costs more

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grad_norm, self.grad_norm = self.grad_norm, None
        grads = [p.grad for p in self.params if p.grad is not None]
        if args.fp16 or not grads:
            return
        finite = grad_norm is not None and bool(torch.isfinite(torch.as_tensor(grad_norm)))
        if any_rank(not (finite or all_finite(grads)), args.device):
            raise non_finite_error(state.global_step + 1, model, args.learning_rate, self.last_checkpoint(),
                                   "The loss or its gradients became NaN/inf (the update was not applied)")


def check_finite_weights(model, step: int, learning_rate: float, last_checkpoint) -> None:
    """Refuse to save a checkpoint whose trainable weights hold NaN/inf."""
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    if params and not all_finite(params):
        raise non_finite_error(step, model, learning_rate, last_checkpoint,
                               "The weights became NaN/inf after the update (its checkpoint was not saved)")
