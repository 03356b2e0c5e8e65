"""KTO, CPO, SimPO, ORPO and NCA: the loss functions the trainers use, against ALGORITHMS.md computed by hand,
and each trainer's real `compute_loss` against the formula on log-probs from a plain forward pass.

Hand-built pair: logp(yw) = -10 over |yw| = 4 tokens, logp(yl) = -12 over |yl| = 5 tokens.
"""

import copy
import json
import math

import pytest
import torch

from rlhfx.algos.losses import cpo_loss, kto_loss, log1mexp, nca_loss, orpo_loss, simpo_loss
from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.registry.tiny import tiny_model_path
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template

PAIR = (torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([4.0]), torch.tensor([5.0]))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def log_odds(avg_logp: float) -> float:
    p = math.exp(avg_logp)
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- hand-built log-probs


def test_nca_scores_each_answer_against_the_reference():
    # r_w = 0.5 (-10 - -11), r_l = 0.5 (-12 - -11.5) = -0.25:
    # -log sigma(0.5) = 0.4740770; -log sigma(-0.5) = 0.9740770; -log sigma(0.25) = 0.5759394
    # L = 0.4740770 + 0.5 * 0.9740770 + 0.5 * 0.5759394 = 1.2490852
    losses, chosen, rejected = nca_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]),
                                        torch.tensor([-11.5]), beta=0.5)
    assert losses.item() == pytest.approx(1.2490852, abs=1e-5)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.5, -0.25))
    # unlike DPO it does not depend on the margin alone: the same margin 0.75 with r_w = 0, r_l = -0.75 gives
    # -log sigma(0) = 0.6931472, -log sigma(0.75) = 0.3868710: L = 0.6931472 * 1.5 + 0.5 * 0.3868710 = 1.2331563
    shifted, _, _ = nca_loss(torch.tensor([-11.0]), torch.tensor([-13.0]), torch.tensor([-11.0]),
                             torch.tensor([-11.5]), beta=0.5)
    assert shifted.item() == pytest.approx(1.2331563, abs=1e-5)


def test_cpo_default_alpha_adds_mean_token_nll():
    # -log sigma(0.1 * (-10 + 12)) = log(1 + e^-0.2) = 0.5981389; + 1.0 * 10/4
    losses, chosen, rejected = cpo_loss(*PAIR, beta=0.1, cpo_alpha=1.0)
    assert losses.item() == pytest.approx(0.5981388693 + 2.5, abs=1e-5)
    assert (chosen.item(), rejected.item()) == pytest.approx((-1.0, -1.2))  # beta * logp


def test_cpo_without_nll_is_the_bare_preference_term():
    losses, _, _ = cpo_loss(*PAIR, beta=0.5, cpo_alpha=0.0)
    assert losses.item() == pytest.approx(-log_sigmoid(0.5 * 2.0), abs=1e-5)


def test_simpo_uses_length_averaged_logps_and_margin():
    # beta 2, gamma 1: 2 * (-10/4) - 2 * (-12/5) - 1 = -5 + 4.8 - 1 = -1.2
    losses, chosen, rejected = simpo_loss(*PAIR, beta=2.0, gamma=1.0)
    assert losses.item() == pytest.approx(-log_sigmoid(-1.2), abs=1e-5)
    assert losses.item() == pytest.approx(1.4632824673, abs=1e-5)
    assert (chosen.item(), rejected.item()) == pytest.approx((-5.0, -4.8))  # beta * logp / |y|
    with_nll, _, _ = simpo_loss(*PAIR, beta=2.0, gamma=1.0, cpo_alpha=0.5)
    assert with_nll.item() == pytest.approx(1.4632824673 + 0.5 * 2.5, abs=1e-5)


def test_orpo_odds_ratio_term_and_nll():
    # p(yw) = e^(-2.5), p(yl) = e^(-2.4); L = 2.5 - 0.1 * log sigma(log odds(yw) - log odds(yl))
    expected = 2.5 - 0.1 * log_sigmoid(log_odds(-2.5) - log_odds(-2.4))
    losses, chosen, rejected = orpo_loss(*PAIR, beta=0.1)
    assert losses.item() == pytest.approx(expected, abs=1e-5)
    assert (chosen.item(), rejected.item()) == pytest.approx((-0.25, -0.24))


def test_orpo_near_certain_responses_stay_finite():
    # average log-probs close to 0 (p close to 1) use the other branch of log(1 - e^x)
    chosen, rejected = torch.tensor([-0.05, -30.0], requires_grad=True), torch.tensor([-0.3, -40.0], requires_grad=True)
    lengths = torch.tensor([1.0, 1.0])
    losses, _, _ = orpo_loss(chosen, rejected, lengths, lengths, beta=0.1)
    expected = [0.05 - 0.1 * log_sigmoid(log_odds(-0.05) - log_odds(-0.3)),
                30.0 - 0.1 * log_sigmoid(log_odds(-30.0) - log_odds(-40.0))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-5)
    losses.sum().backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert torch.isfinite(log1mexp(torch.tensor([0.0, -1e-12]))).all()


def test_kto_reference_point_from_mismatched_pairs_and_weights():
    logps = torch.tensor([-10.0, -12.0, -8.0, -9.0])
    ref = torch.tensor([-11.0, -11.0, -8.5, -8.0])
    labels = torch.tensor([True, False, True, False])
    # KL estimates of (x_i, y_(i+1)): 0.4, 1.0, -0.2, 0.6 -> mean 0.45 = z0
    kl, ref_kl = torch.tensor([-20.0, -15.0, -9.2, -13.0]), torch.tensor([-20.4, -16.0, -9.0, -13.6])
    beta, w_d, w_u = 0.1, 1.5, 0.5
    losses, rewards, z0 = kto_loss(logps, ref, labels, kl, ref_kl, beta=beta, desirable_weight=w_d,
                                   undesirable_weight=w_u)
    assert z0.item() == pytest.approx(0.45, abs=1e-6)
    r = [1.0, -1.0, 0.5, -1.0]
    expected = [w_d * (1 - sigmoid(beta * (r[0] - 0.45))), w_u * (1 - sigmoid(beta * (0.45 - r[1]))),
                w_d * (1 - sigmoid(beta * (r[2] - 0.45))), w_u * (1 - sigmoid(beta * (0.45 - r[3])))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert losses.mean().item() == pytest.approx(sum(expected) / 4, abs=1e-6)
    assert rewards.tolist() == pytest.approx([beta * x for x in r])


def test_kto_reference_point_is_clamped_at_zero_and_detached():
    logps = torch.tensor([-10.0, -12.0], requires_grad=True)
    ref = torch.tensor([-11.0, -11.0])
    kl = torch.tensor([-20.0, -15.0], requires_grad=True)
    ref_kl = torch.tensor([-19.0, -14.5])  # KL estimates -1.0, -0.5: negative mean -> z0 = 0
    losses, _, z0 = kto_loss(logps, ref, torch.tensor([True, False]), kl, ref_kl, beta=0.1)
    assert z0.item() == 0.0 and not z0.requires_grad
    assert losses.tolist() == pytest.approx([1 - sigmoid(0.1), 1 - sigmoid(0.1)], abs=1e-6)
    losses.mean().backward()
    assert logps.grad[0] < 0 < logps.grad[1]  # raise the desirable, lower the undesirable
    assert kl.grad is None


def test_kto_weight_advice_names_the_weight_to_change():
    from rlhfx.algos.kto import weight_advice

    assert weight_advice(100, 100, 1.0, 1.0) is None
    assert weight_advice(120, 100, 1.0, 1.0) is None  # 1.2 is inside [1, 4/3]
    low = weight_advice(50, 100, 1.0, 1.0)  # 0.5: too little desirable mass
    assert "--desirable_weight to 2.00-2.67" in low
    high = weight_advice(300, 100, 1.0, 1.0)  # 3.0: too much desirable mass
    assert "--undesirable_weight to 2.25-3.00" in high


# ---------------------------------------------------------------- the trainers' real loss


def sequence_logp(model, prompt_ids, completion_ids) -> tuple[float, int]:
    """Summed log-prob of the completion after the prompt, from a plain unpadded forward pass."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    token_logps = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return token_logps[len(prompt_ids) - 1:].sum().item(), len(completion_ids)


def tiny_models():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path()
    ref = AutoModelForCausalLM.from_pretrained(path)
    policy = copy.deepcopy(ref)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return AutoTokenizer.from_pretrained(path), policy, ref


def demo_rows(kind: str, n: int) -> list[dict]:
    rows = [json.loads(line) for line in (DATA_DIR / f"demo_{kind}_train.jsonl").read_text().splitlines()[:n]]
    for row in rows:
        row["prompt"] = [{"role": "user", "content": row["prompt"]}]
    return rows


def build(name, flags, tmp_path, policy, ref, tokenizer, encoded):
    from datasets import Dataset

    from rlhfx.algos import get_algo
    from rlhfx.arguments import parse_args
    from rlhfx.training.hf_args import hf_training_kwargs
    from rlhfx.training.runner import RunContext

    args = parse_args("rlhf", ["--rlhf_type", name, "--model", "tiny", "--dataset", "demo-kto", "--train_type", "full",
                               "--batch_size", str(len(encoded)), *flags])
    algorithm = get_algo(name)
    ctx = RunContext(args=args, options=algorithm.build_options(args), algorithm=algorithm, model=policy, ref_model=ref, tokenizer=tokenizer, peft_config=None,
                     train_dataset=Dataset.from_list(encoded), eval_dataset=None,
                     hf_args=hf_training_kwargs(args, tmp_path, 1e-4, False), callbacks=[])
    trainer = algorithm.build_trainer(ctx)
    trainer.model.train()
    return trainer


@pytest.mark.parametrize("name, flags", [
    ("cpo", []),
    ("cpo", ["--beta", "0.5", "--cpo_alpha", "0.3"]),
    ("simpo", []),
    ("simpo", ["--beta", "2.5", "--simpo_gamma", "0.5", "--cpo_alpha", "0.2"]),
    ("orpo", ["--beta", "0.2"]),
])
def test_reference_free_trainer_loss_equals_formula(tmp_path, name, flags):
    tokenizer, policy, _ = tiny_models()
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    rows = demo_rows("pref", 4)
    encoded = [{"prompt_ids": encoder.encode_prompt(r["prompt"]),
                "chosen_ids": encoder.encode_completion(r["prompt"], r["chosen"]),
                "rejected_ids": encoder.encode_completion(r["prompt"], r["rejected"])} for r in rows]
    trainer = build(name, flags, tmp_path, policy, None, tokenizer, encoded)
    assert trainer.ref_model is None
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(encoded)).item()

    opts = dict(zip(flags[::2], map(float, flags[1::2])))
    beta = opts.get("--beta", {"cpo": 0.1, "simpo": 2.0, "orpo": 0.1}[name])
    alpha = opts.get("--cpo_alpha", {"cpo": 1.0, "simpo": 0.0, "orpo": 0.0}[name])
    gamma = opts.get("--simpo_gamma", 1.0)
    expected = []
    for row in encoded:
        c, lc = sequence_logp(policy, row["prompt_ids"], row["chosen_ids"])
        r, lr = sequence_logp(policy, row["prompt_ids"], row["rejected_ids"])
        if name == "cpo":
            value = -log_sigmoid(beta * (c - r)) + alpha * (-c / lc)
        elif name == "simpo":
            value = -log_sigmoid(beta * c / lc - beta * r / lr - gamma) + alpha * (-c / lc)
        else:
            value = -c / lc - beta * log_sigmoid(log_odds(c / lc) - log_odds(r / lr))
        expected.append(value)
    assert loss == pytest.approx(sum(expected) / len(expected), abs=1e-5)


def test_kto_trainer_loss_equals_formula_with_kl_pairs(tmp_path):
    tokenizer, ref, policy = tiny_models()  # the reference is the perturbed copy, so the KL estimate is > 0
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    rows = demo_rows("kto", 6)
    encoded = [{"prompt_ids": encoder.encode_prompt(r["prompt"]),
                "completion_ids": encoder.encode_completion(r["prompt"], r["completion"]),
                "label": r["label"]} for r in rows]
    w_d, w_u, beta = 1.3, 0.7, 0.2
    trainer = build("kto", ["--beta", str(beta), "--desirable_weight", str(w_d), "--undesirable_weight", str(w_u)],
                    tmp_path, policy, ref, tokenizer, encoded)
    batch = trainer.data_collator(encoded)
    assert "KL_input_ids" in batch
    loss = trainer.compute_loss(trainer.model, batch).item()

    n = len(encoded)
    rewards, kl = [], []
    for i, row in enumerate(encoded):
        rewards.append(sequence_logp(policy, row["prompt_ids"], row["completion_ids"])[0]
                       - sequence_logp(ref, row["prompt_ids"], row["completion_ids"])[0])
        mismatched = encoded[(i + 1) % n]["completion_ids"]  # (x_i, y_(i+1))
        kl.append(sequence_logp(policy, row["prompt_ids"], mismatched)[0]
                  - sequence_logp(ref, row["prompt_ids"], mismatched)[0])
    z0 = max(0.0, sum(kl) / n)
    assert z0 > 0.1  # the clamp is tested on hand-built numbers above; here the reference point must be live
    expected = [w_d * (1 - sigmoid(beta * (r - z0))) if row["label"] else w_u * (1 - sigmoid(beta * (z0 - r)))
                for r, row in zip(rewards, encoded)]
    assert loss == pytest.approx(sum(expected) / n, abs=1e-5)
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(z0, abs=1e-5)
    assert any(abs(r) > 1e-2 for r in rewards)


@pytest.mark.parametrize("flags, beta", [([], 0.1), (["--beta", "0.5"], 0.5)])
def test_nca_trainer_loss_equals_formula(tmp_path, flags, beta):
    """--rlhf_type nca through its record: the pairwise trainer with a reference, and --beta reaching the loss."""
    tokenizer, policy, ref = tiny_models()
    encoder = ChatEncoder(tokenizer, get_template("chatml"))
    encoded = [{"prompt_ids": encoder.encode_prompt(r["prompt"]),
                "chosen_ids": encoder.encode_completion(r["prompt"], r["chosen"]),
                "rejected_ids": encoder.encode_completion(r["prompt"], r["rejected"])} for r in demo_rows("pref", 4)]
    trainer = build("nca", flags, tmp_path, policy, ref, tokenizer, encoded)
    assert trainer.ref_model is ref
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(encoded)).item()
    expected = []
    for row in encoded:
        r_w = beta * (sequence_logp(policy, row["prompt_ids"], row["chosen_ids"])[0]
                      - sequence_logp(ref, row["prompt_ids"], row["chosen_ids"])[0])
        r_l = beta * (sequence_logp(policy, row["prompt_ids"], row["rejected_ids"])[0]
                      - sequence_logp(ref, row["prompt_ids"], row["rejected_ids"])[0])
        expected.append(-log_sigmoid(r_w) - 0.5 * log_sigmoid(-r_w) - 0.5 * log_sigmoid(-r_l))
    assert loss == pytest.approx(sum(expected) / len(expected), abs=1e-5)
