"""`--rlhf_type simpo`: SimPO, length-normalised and reference-free, with an optional NLL term.

L = -log sigma(beta logp(yw)/|yw| - beta logp(yl)/|yl| - gamma) + cpo_alpha NLL(yw) (`simpo_loss`),
trained by the reference-free trainer in algos/cpo.py (TRL keeps SimPO as CPO with loss_type simpo).
cpo_alpha defaults to 0 here (original SimPO), unlike ms-swift's 1.0: ALGORITHMS.md is the contract.
"""

from rlhfx.algos.cpo import build_reference_free_trainer
from rlhfx.algos.losses import simpo_loss
from rlhfx.errors import RlhfxError

KIND = "pairwise"
DEFAULT_BETA = 2.0
DEFAULT_CPO_ALPHA = 0.0


def loss_options(args) -> dict:
    beta = DEFAULT_BETA if args.beta is None else args.beta
    cpo_alpha = DEFAULT_CPO_ALPHA if args.cpo_alpha is None else args.cpo_alpha
    if beta <= 0:
        raise RlhfxError(f"--beta must be > 0 for simpo, got {beta}.", "SimPO uses 2.0 to 10; the default is 2.0.")
    if cpo_alpha < 0:
        raise RlhfxError(f"--cpo_alpha must be >= 0, got {cpo_alpha}.", "0 (the default) is the original SimPO.")
    return {"beta": beta, "gamma": args.simpo_gamma, "cpo_alpha": cpo_alpha}


def build_trainer(ctx):
    options = loss_options(ctx.args)
    beta = options.pop("beta")
    return build_reference_free_trainer(ctx, "simpo", beta, simpo_loss, options)
