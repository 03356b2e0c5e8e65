"""`--rlhf_type orpo`: ORPO, SFT plus an odds-ratio preference term, reference-free.

p(y) = exp(logp(y)/|y|), odds = p/(1-p); L = NLL(yw) - lambda log sigma(log odds(yw) - log odds(yl))
(`orpo_loss`), lambda passed as --beta (ms-swift's convention). Trained by the reference-free trainer
in algos/cpo.py; TRL's experimental ORPOTrainer is not used (see there), and unlike it the NLL term
covers the response tokens only, as ALGORITHMS.md defines NLL.
"""

from rlhfx.algos.cpo import build_reference_free_trainer
from rlhfx.algos.losses import orpo_loss
from rlhfx.errors import RlhfxError

KIND = "pairwise"
DEFAULT_BETA = 0.1


def build_trainer(ctx):
    beta = DEFAULT_BETA if ctx.args.beta is None else ctx.args.beta
    if beta < 0:
        raise RlhfxError(f"--beta (ORPO's lambda) must be >= 0, got {beta}.", "0.1 is the usual value.")
    return build_reference_free_trainer(ctx, "orpo", beta, orpo_loss, {})
