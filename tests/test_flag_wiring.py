"""Every algorithm flag, changed on the `rlhfx` command line, changes the first logged training loss exactly as
shared/docs/ALGORITHMS.md (or the flag's help, where that doc is silent) says.

Each case runs the real CLI in this process (`rlhfx rlhf` / `rlhfx sft`, --max_steps 1, one batch holding every
row) and reads the first `loss` of metrics.jsonl: the forward before the first update. The expected value is
worked out here from plain forward passes of the same weights: the policy is the tiny model, and the reference
(dpo, kto, joint training) or teacher (kd, gkd) is a perturbed copy saved to a folder, so that log-ratios and
divergences are not zero. Besides matching the formula to 1e-4, every case checks that putting each of its
flags back to its documented default moves the formula by more than 10x that, so a flag the code ignores fails.

The tests drive only the public entry point, so they hold across rewrites of how algorithms and their options
are declared. Flags that do not show in the first loss get their own check (max_eval_steps: which steps refresh).
"""

import copy
import json
import math

import pytest
import torch
from cli_inprocess import run_cli  # noqa: F401 (fixture)
from pairs import encoded_pairs

from rlhfx.registry.demo_task import DATA_DIR
from rlhfx.registry.tiny import tiny_model_path
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import get_template

TOLERANCE = 1e-4
PLACEHOLDERS = ("<|endoftext|>", "<|im_start|>")  # tokens of the tiny vocabulary: no new, randomly set embedding

# Documented defaults (ALGORITHMS.md and --help), which the sensitivity check puts each changed flag back to.
DEFAULTS = {
    "dpo": {"beta": 0.1, "loss_type": "sigmoid", "ipo": False, "label_smoothing": 0.0, "rpo_alpha": 0.0},
    "cpo": {"beta": 0.1, "cpo_alpha": 1.0},
    "simpo": {"beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 0.0},
    "orpo": {"beta": 0.1},
    "kto": {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0, "desirable_threshold": None},
    "kd": {"kd_coef": 0.4},
    "gkd": {"beta": 0.5, "sft_alpha": 0.0},
    "mix": {"lambd": 0.5, "beta": 0.1, "loss_type": "sigmoid", "ipo": False, "label_smoothing": 0.0},
    "alright": {"lambd": 0.5, "beta": 0.1},
    "maxright": {"lambd": 0.5, "beta": 0.1, "sft_opt": 0.0, "dpo_opt": 0.0},
    # prm: against the first prm case (its real defaults, a binary head and a new <|step|> token, start randomly)
    "prm": {"reward_tokens": ["+", "-"], "placeholder_token": PLACEHOLDERS[0]},
    "sft": {"train_on": "all"},
}


def read_rows(name: str, n: int) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / f"{name}.jsonl").read_text().splitlines()[:n]]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def argv_of(flags: dict) -> list[str]:
    out = []
    for name, value in flags.items():
        if value is True:
            out.append(f"--{name}")
        elif isinstance(value, list):
            out += [f"--{name}", *value]
        else:
            out += [f"--{name}", str(value)]
    return out


# ---------------------------------------------------------------- the models, the data and their log-probs


class World:
    """The tiny policy, its perturbed reference/teacher (a folder too), the data files and plain-forward helpers."""

    def __init__(self, folder):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
        self.policy = AutoModelForCausalLM.from_pretrained(tiny_model_path()).eval()
        self.ref = copy.deepcopy(self.policy)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in self.ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
        self.ref_dir = folder / "perturbed"
        self.ref.save_pretrained(self.ref_dir)
        self.tokenizer.save_pretrained(self.ref_dir)
        self.encoder = ChatEncoder(self.tokenizer, get_template("chatml"))

        self.pairs = write_rows(folder / "pairs.jsonl", read_rows("demo_pref_train", 2))
        self.margins = [1.5, -0.5]
        self.pairs_margin = write_rows(folder / "pairs_margin.jsonl", [
            {**row, "margin": m} for row, m in zip(read_rows("demo_pref_train", 2), self.margins)])
        self.kto_rows = read_rows("demo_kto_train", 2)
        assert [r["label"] for r in self.kto_rows] == [True, False]
        self.kto = write_rows(folder / "kto.jsonl", self.kto_rows)
        self.scores = [4, 5]  # --desirable_threshold 5: the first undesirable, the second desirable
        scored = [{"prompt": r["prompt"], "completion": r["completion"], "score": s}
                  for r, s in zip(self.kto_rows, self.scores)]
        self.kto_scored = write_rows(folder / "kto_scored.jsonl", scored)
        self.sft_rows = [r["messages"] for r in read_rows("demo_sft_train", 2)]
        self.sft = write_rows(folder / "sft.jsonl", [{"messages": m} for m in self.sft_rows])
        self.sft_one = write_rows(folder / "sft_one.jsonl", [{"messages": self.sft_rows[1]}])
        self.two_turns = [{"role": "user", "content": "Describe the yellow fish."},
                          {"role": "assistant", "content": "The yellow fish is big."},
                          {"role": "user", "content": "And the brown bee?"},
                          {"role": "assistant", "content": "The brown bee is fast."}]
        self.sft_turns = write_rows(folder / "sft_turns.jsonl", [{"messages": self.two_turns}])
        self.prm_rows = read_rows("demo_prm_train", 2)
        self.prm = write_rows(folder / "prm.jsonl", self.prm_rows)

    # -- plain forward passes

    @torch.no_grad()
    def logits(self, model, ids: list[int]) -> torch.Tensor:
        return model(input_ids=torch.tensor([ids])).logits[0].double()

    def logp(self, model, prompt_ids, completion_ids) -> tuple[float, int]:
        """Summed log-prob of the completion after the prompt, and its token count."""
        ids = list(prompt_ids) + list(completion_ids)
        token_logps = torch.log_softmax(self.logits(model, ids)[:-1], -1).gather(-1, torch.tensor(ids[1:])[:, None])
        return token_logps[len(prompt_ids) - 1:].sum().item(), len(completion_ids)

    def pair_logps(self) -> list[dict]:
        """Per pair: summed log-probs of chosen and rejected under policy and reference, and their lengths."""
        out = []
        for pair in encoded_pairs(self.tokenizer, 2):
            c, lc = self.logp(self.policy, pair["prompt_ids"], pair["chosen_ids"])
            r, lr = self.logp(self.policy, pair["prompt_ids"], pair["rejected_ids"])
            out.append({"c": c, "r": r, "lc": lc, "lr": lr,
                        "rc": self.logp(self.ref, pair["prompt_ids"], pair["chosen_ids"])[0],
                        "rr": self.logp(self.ref, pair["prompt_ids"], pair["rejected_ids"])[0]})
        return out

    def sft_tokens(self, messages) -> tuple[list[int], list[int]]:
        """Ids of a conversation and the positions t whose next token t + 1 is an assistant token."""
        encoded = self.encoder.encode_sft(messages)
        return encoded["input_ids"], [t for t, m in enumerate(encoded["assistant_masks"][1:]) if m]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("wiring"))


@pytest.fixture
def logged(tmp_path, run_cli):  # noqa: F811
    """`logged(command, *argv, steps=1)` -> the metrics.jsonl records with a training loss, one per step."""
    runs = iter(range(100))

    def run(*argv, steps: int = 1) -> list[dict]:
        out = tmp_path / f"run{next(runs)}"
        code, output = run_cli(*argv, "--model", "tiny", "--train_type", "full", "--max_steps", steps,
                               "--logging_steps", "1", "--output_dir", out)
        assert code == 0, output[-3000:]
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r for r in records if "loss" in r]
    return run


@pytest.fixture
def first_logged(logged):
    """`first_logged(command, *argv)` -> the first training record of a one-step run: the loss before any update."""
    return lambda *argv: logged(*argv)[0]


# ---------------------------------------------------------------- the formulas


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def dpo_formula(pairs, o) -> float:
    """ALGORITHMS.md: sigmoid/cDPO on summed log-ratios; --loss_type ipo on per-token means; --ipo on sums; + rpo."""
    beta, e = o["beta"], o.get("label_smoothing", 0.0)
    losses = []
    for p in pairs:
        z = (p["c"] - p["r"]) - (p["rc"] - p["rr"])
        if o.get("ipo"):
            loss = (z - 1 / (2 * beta)) ** 2
        elif o.get("loss_type") == "ipo":
            loss = ((p["c"] - p["rc"]) / p["lc"] - (p["r"] - p["rr"]) / p["lr"] - 1 / (2 * beta)) ** 2
        else:
            loss = -(1 - e) * log_sigmoid(beta * z) - e * log_sigmoid(-beta * z)
        losses.append(loss + o.get("rpo_alpha", 0.0) * (-p["c"] / p["lc"]))
    return mean(losses)


def log_odds(avg_logp: float) -> float:
    return avg_logp - math.log(-math.expm1(avg_logp))


def reference_free_formula(name, pairs, o) -> float:
    losses = []
    for p in pairs:
        c, r, lc, lr = p["c"], p["r"], p["lc"], p["lr"]
        if name == "cpo":
            losses.append(-log_sigmoid(o["beta"] * (c - r)) + o["cpo_alpha"] * (-c / lc))
        elif name == "simpo":
            margin = o["beta"] * c / lc - o["beta"] * r / lr - o["simpo_gamma"]
            losses.append(-log_sigmoid(margin) + o["cpo_alpha"] * (-c / lc))
        else:  # orpo, lambda = beta
            losses.append(-c / lc - o["beta"] * log_sigmoid(log_odds(c / lc) - log_odds(r / lr)))
    return mean(losses)


def kto_formula(world, labels, o) -> float:
    """r = logp - logref; z0 = max(0, mean KL estimate over the mismatched pairs (x_i, y_(i+1))), detached."""
    encoded = [(world.encoder.encode_prompt([{"role": "user", "content": row["prompt"]}]),
                world.encoder.encode_completion([{"role": "user", "content": row["prompt"]}], row["completion"]))
               for row in world.kto_rows]
    n, rewards, kl = len(encoded), [], []
    for i, (prompt, completion) in enumerate(encoded):
        rewards.append(world.logp(world.policy, prompt, completion)[0] - world.logp(world.ref, prompt, completion)[0])
        other = encoded[(i + 1) % n][1]
        kl.append(world.logp(world.policy, prompt, other)[0] - world.logp(world.ref, prompt, other)[0])
    z0, beta = max(0.0, mean(kl)), o["beta"]
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    return mean(o["desirable_weight"] * (1 - sigmoid(beta * (r - z0))) if label
                else o["undesirable_weight"] * (1 - sigmoid(beta * (z0 - r))) for r, label in zip(rewards, labels))


def sft_nll(world, rows_tokens) -> float:
    """Token-mean NLL of the policy over the trained tokens of all rows together."""
    total, count = 0.0, 0
    for ids, positions in rows_tokens:
        logp = torch.log_softmax(world.logits(world.policy, ids), -1)
        total -= sum(logp[t, ids[t + 1]].item() for t in positions)
        count += len(positions)
    return total / count


def divergence(world, rows_tokens, o, nll_weight: float = 0.0, kd: bool = False) -> float:
    """Token mean over the trained positions of: kd, (1 - kd_coef) NLL + kd_coef (-sum_v p_t log p_s); gkd, the
    generalised JSD with interpolation beta (0: KL(teacher || student), 1: KL(student || teacher)) + sft_alpha NLL."""
    total, count = 0.0, 0
    for ids, positions in rows_tokens:
        s = torch.log_softmax(world.logits(world.policy, ids), -1)[positions]
        t = torch.log_softmax(world.logits(world.ref, ids), -1)[positions]
        nll = -s.gather(-1, torch.tensor([ids[p + 1] for p in positions])[:, None]).squeeze(-1)
        if kd:
            value = (1 - o["kd_coef"]) * nll + o["kd_coef"] * -(t.exp() * s).sum(-1)
        else:
            beta = o["beta"]
            kl = lambda a, b: (a.exp() * (a - b)).sum(-1)  # noqa: E731  KL(a || b) from log-probs
            if beta == 0:
                value = kl(t, s)
            elif beta == 1:
                value = kl(s, t)
            else:
                m = torch.logsumexp(torch.stack([s + math.log(1 - beta), t + math.log(beta)]), 0)
                value = beta * kl(t, m) + (1 - beta) * kl(s, m)
            value = value + nll_weight * nll
        total += value.sum().item()
        count += len(positions)
    return total / count


def prm_formula(world, o) -> float:
    """Cross-entropy over the (good, bad) reward-token logits read at each step's placeholder, mean over steps."""
    placeholder = world.tokenizer.convert_tokens_to_ids(o["placeholder_token"])
    good, bad = (world.tokenizer.convert_tokens_to_ids(t) for t in o["reward_tokens"])
    losses = []
    for row in world.prm_rows:
        ids, positions = list(world.encoder.encode_prompt([{"role": "user", "content": row["prompt"]}])), []
        for step in row["steps"]:
            ids += world.tokenizer(step, add_special_tokens=False)["input_ids"] + [placeholder]
            positions.append(len(ids) - 1)
        logq = torch.log_softmax(world.logits(world.policy, ids)[positions][:, [good, bad]], -1)
        losses += [-(p * q[0] + (1 - p) * q[1]).item() for p, q in zip(row["labels"], logq)]
    return mean(losses)


# ---------------------------------------------------------------- flag -> first logged loss


def expected_loss(world, name: str, o: dict) -> float:
    if name == "dpo":
        return dpo_formula(world.pair_logps(), o)
    if name in ("cpo", "simpo", "orpo"):
        return reference_free_formula(name, world.pair_logps(), o)
    if name == "kto":
        threshold = o["desirable_threshold"]  # a score column: desirable when score >= threshold
        labels = [r["label"] for r in world.kto_rows] if threshold is None else [s >= threshold for s in world.scores]
        return kto_formula(world, labels, o)
    if name == "kd":
        return divergence(world, [world.sft_tokens(m) for m in world.sft_rows], o, kd=True)
    if name == "gkd":
        return divergence(world, [world.sft_tokens(world.sft_rows[1])], o, nll_weight=o["sft_alpha"])
    if name == "mix":  # (1 - lambd) L_sft + lambd L_dpo
        sft = sft_nll(world, [world.sft_tokens(m) for m in world.sft_rows])
        return (1 - o["lambd"]) * sft + o["lambd"] * dpo_formula(world.pair_logps(), o)
    if name == "prm":
        return prm_formula(world, o)
    if name == "sft":  # train_on last: only the last run of assistant tokens
        ids, positions = world.sft_tokens(world.two_turns)
        if o["train_on"] == "last":
            start = max(i for i, t in enumerate(positions) if i == 0 or positions[i - 1] != t - 1)
            positions = positions[start:]
        return sft_nll(world, [(ids, positions)])
    raise ValueError(name)


REFERENCE = ("dpo", "kto", "mix", "alright", "maxright")
TEACHER = ("kd", "gkd")
DATA = {"dpo": "pairs", "cpo": "pairs", "simpo": "pairs", "orpo": "pairs", "mix": "pairs", "kto": "kto",
        "kd": "sft", "gkd": "sft_one", "prm": "prm", "sft": "sft_turns", "alright": "pairs", "maxright": "pairs"}


def case(name: str, flags: dict, data: str | None = None):
    label = "-".join([name, *(f"{k}={'/'.join(v) if isinstance(v, list) else v}" for k, v in flags.items())])
    return pytest.param(name, flags, data or DATA[name], id=label)


CASES = [  # several flags of one algorithm share a run; the sensitivity check still puts each back on its own
    case("dpo", {"beta": 0.5, "label_smoothing": 0.2}),
    case("dpo", {"loss_type": "ipo"}),
    case("dpo", {"ipo": True}),
    case("cpo", {"beta": 0.5, "cpo_alpha": 0.3}),
    case("simpo", {"beta": 2.5, "simpo_gamma": 0.5, "cpo_alpha": 0.2}),
    case("orpo", {"beta": 0.5}),
    case("kto", {"beta": 0.5, "desirable_weight": 1.7, "undesirable_weight": 0.4}),
    case("kto", {"label_key": "score", "desirable_threshold": 5}, data="kto_scored"),
    case("kd", {"kd_coef": 0.9}),
    case("gkd", {"lmbda": 0.0, "beta": 0.0}),
    case("gkd", {"lmbda": 0.0, "beta": 1.0, "sft_alpha": 0.5}),
    case("mix", {"lambd": 0.2, "beta": 0.5, "label_smoothing": 0.2}),
    case("mix", {"loss_type": "ipo"}),
    case("prm", {"reward_tokens": ["+", "-"], "placeholder_token": PLACEHOLDERS[0]}),
    case("prm", {"reward_tokens": ["-", "+"], "placeholder_token": PLACEHOLDERS[1]}),
    case("sft", {"train_on": "last"}),
]
# gkd --lmbda 0: every step uses the data's responses (--lmbda 1 is checked on its own below); --label_key names
# the score column that --desirable_threshold reads
NOT_IN_FORMULA = {"lmbda", "label_key"}


def command_line(world, name: str, flags: dict, data: str | None = None) -> list[str]:
    head = ["sft"] if name == "sft" else ["rlhf", "--rlhf_type", name]
    extra = ["--ref_model", world.ref_dir] if name in REFERENCE else []
    extra += ["--teacher_model", world.ref_dir] if name in TEACHER else []
    extra += ["--sft_dataset", world.sft] if name in ("mix", "alright", "maxright") else []
    return [*head, "--dataset", getattr(world, data or DATA[name]), "--batch_size", "2", *extra, *argv_of(flags)]


@pytest.mark.parametrize("name, flags, data", CASES)
def test_flag_changes_the_first_loss_as_the_formula_says(world, first_logged, name, flags, data):
    options = {**DEFAULTS[name], **flags}
    expected = expected_loss(world, name, options)
    for flag in set(flags) - NOT_IN_FORMULA:  # the flag must matter here, or ignoring it would pass
        if flags[flag] != DEFAULTS[name][flag]:
            without = expected_loss(world, name, {**options, flag: DEFAULTS[name][flag]})
            assert abs(expected - without) > 10 * TOLERANCE, (flag, expected, without)
    logged = first_logged(*command_line(world, name, flags, data))
    assert logged["loss"] == pytest.approx(expected, abs=TOLERANCE), (name, flags)


def test_rpo_alpha_adds_the_chosen_mean_token_nll(world, first_logged):
    """loss(rpo_alpha=1) - loss(rpo_alpha=0) == mean NLL(yw) = mean over pairs of -logp(yw) / |yw|, two real runs."""
    base = first_logged(*command_line(world, "dpo", {}))["loss"]
    with_nll = first_logged(*command_line(world, "dpo", {"rpo_alpha": 1.0}))["loss"]
    pairs = world.pair_logps()
    assert base == pytest.approx(dpo_formula(pairs, DEFAULTS["dpo"]), abs=TOLERANCE)
    assert with_nll - base == pytest.approx(mean(-p["c"] / p["lc"] for p in pairs), abs=TOLERANCE)


def test_rm_margin_column_shifts_the_bradley_terry_loss(world, first_logged):
    """-log sigma(r(x,yw) - r(x,yl) - margin): the new reward head starts at zero, so the first loss is
    mean log(1 + e^margin) (log 2 without the column)."""
    logged = first_logged("rlhf", "--rlhf_type", "rm", "--dataset", world.pairs_margin, "--batch_size", "2")
    assert logged["rewards/margins"] == 0.0
    assert logged["loss"] == pytest.approx(mean(math.log1p(math.exp(m)) for m in world.margins), abs=TOLERANCE)


def test_gkd_lmbda_one_distils_on_the_students_own_completion(world, first_logged):
    """--lmbda 1: the student completes the prompt itself. With one generated token the loss is the divergence at
    the prompt's last position only, whatever token was sampled (here reverse KL, --beta 1)."""
    ids, positions = world.sft_tokens(world.sft_rows[1])
    on_policy = divergence(world, [(ids, positions[:1])], {"beta": 1.0})
    off_policy = divergence(world, [(ids, positions)], {"beta": 1.0})
    assert abs(on_policy - off_policy) > 10 * TOLERANCE
    logged = first_logged(*command_line(world, "gkd", {"lmbda": 1.0, "beta": 1.0, "max_completion_length": 1}))
    assert logged["loss"] == pytest.approx(on_policy, abs=TOLERANCE)


def joint_losses(world, beta: float = 0.1) -> tuple[float, float]:
    """(L_sft, L_dpo) of the first batches: every SFT row, every pair."""
    return (sft_nll(world, [world.sft_tokens(m) for m in world.sft_rows]),
            dpo_formula(world.pair_logps(), {"beta": beta}))


def test_alright_lambd_one_trains_dpo(world, first_logged):
    """ALRIGHT draws u ~ U(0,1) and trains DPO when u < lambd: always at lambd 1 (the first draw at the default 0.5
    happens to pick SFT)."""
    logged = first_logged(*command_line(world, "alright", {"lambd": 1.0}))
    sft, dpo = joint_losses(world)
    assert logged["objective"] == 1.0
    assert logged["loss"] == pytest.approx(dpo, abs=TOLERANCE)


def test_maxright_gaps_and_choice_follow_lambd_and_the_optima(world, first_logged):
    """g_sft = (1 - lambd)(L_sft - sft_opt), g_dpo = lambd (L_dpo - dpo_opt); the larger gap trains (ties: SFT).
    The defaults train SFT first; these values train DPO, and each moves the gaps on its own."""
    def gaps(o):
        return (1 - o["lambd"]) * (sft - o["sft_opt"]), o["lambd"] * (dpo - o["dpo_opt"])

    flags = {"lambd": 0.6, "sft_opt": 5.0, "dpo_opt": -1.0}
    sft, dpo = joint_losses(world)
    g_sft, g_dpo = gaps({**DEFAULTS["maxright"], **flags})
    default_sft, default_dpo = gaps(DEFAULTS["maxright"])
    assert default_sft >= default_dpo and g_sft < g_dpo
    for flag in flags:
        alone = gaps({**DEFAULTS["maxright"], **flags, flag: DEFAULTS["maxright"][flag]})
        assert max(abs(a - b) for a, b in zip(alone, (g_sft, g_dpo))) > 10 * TOLERANCE
    logged = first_logged(*command_line(world, "maxright", flags))
    assert (logged["gap/sft"], logged["gap/dpo"]) == pytest.approx((g_sft, g_dpo), abs=TOLERANCE)
    assert logged["objective"] == 1.0
    assert logged["loss"] == pytest.approx(dpo, abs=TOLERANCE)


def test_maxright_max_eval_steps_sets_the_refresh_steps(world, logged):
    """Both gaps are re-measured at steps 0, N, 2N, ...: with N = 2, the first and third of three steps."""
    records = logged(*command_line(world, "maxright", {"max_eval_steps": 2}), steps=3)
    assert [r["refreshed"] for r in records] == [1.0, 0.0, 1.0]
