"""`--rlhf_type kd`: knowledge distillation from --teacher_model on SFT data (OpenRLHF `train_kd`, MiniLLM-style).

Loss per batch (`kd_loss`): (1 - kd_coef) NLL + kd_coef (-sum_v p_teacher(v) log p_student(v)), token means
over the response (assistant) tokens of the data. TRL 1.16's DistillationTrainer distils on-policy (it
generates completions and uses a generalised JSD) and has no NLL term, so this is SFTTrainer with our loss:
TRL keeps the collator (labels -100 outside the assistant tokens), training loop, checkpoints and plumbing.

Teacher and student must share the tokenizer vocabulary; their logit widths may differ by embedding padding
(Qwen2.5 0.5B vs 7B), in which case both are cut to the narrower one. --teacher_offload keeps the teacher in
CPU memory and moves it to the accelerator only for its forward pass (no effect when training on the CPU).
"""

import torch
from trl import SFTConfig, SFTTrainer

from rlhfx.algos.losses import kd_loss
from rlhfx.errors import RlhfxError

class KDTrainer(SFTTrainer):
    """SFTTrainer whose loss mixes the NLL of the data with the cross-entropy to a frozen teacher's distribution."""

    def __init__(self, *args, teacher, kd_coef: float, teacher_offload: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.kd_coef, self.teacher_offload = teacher, kd_coef, teacher_offload
        if not teacher_offload:
            self.teacher.to(self.accelerator.device)

    def teacher_logits(self, inputs: dict) -> torch.Tensor:
        device = self.accelerator.device
        with torch.no_grad():
            if self.teacher_offload:
                self.teacher.to(device)
            logits = self.teacher(**inputs, use_cache=False).logits
            if self.teacher_offload:
                self.teacher.to("cpu")
        return logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        forward = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        outputs = model(**forward, use_cache=False)
        teacher = self.teacher_logits(forward)
        width = min(outputs.logits.size(-1), teacher.size(-1))
        loss, nll, distill = kd_loss(outputs.logits[:, :-1, :width], teacher[:, :-1, :width], inputs["labels"][:, 1:],
                                     self.kd_coef)
        gather = self.accelerator.gather_for_metrics
        self._metrics[mode]["nll"].append(gather(nll.detach()).mean().item())
        self._metrics[mode]["distill_loss"].append(gather(distill.detach()).mean().item())
        return (loss, outputs) if return_outputs else loss


def load_teacher(args, teacher_model: str, tokenizer, student):
    """The frozen teacher, after checking it reads the student's tokens the same way."""
    from rlhfx.models import load_causal_lm, load_tokenizer, resolve_model_path

    path = resolve_model_path(teacher_model, None)
    teacher_vocab, student_vocab = load_tokenizer(path).get_vocab(), tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        differing = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()), key=lambda kv: kv[1])
        raise RlhfxError(
            f"Teacher {teacher_model} and student {args.model} have different vocabularies "
            f"({len(teacher_vocab)} vs {len(student_vocab)} tokens; first difference: token {differing[0][0]!r} "
            f"id {differing[0][1]}). KD compares their distributions token by token, so they must share one.",
            "pick a teacher from the student's model family (same tokenizer).")
    teacher = load_causal_lm(path, args.torch_dtype)
    if min(teacher.config.vocab_size, student.config.vocab_size) < len(tokenizer):
        raise RlhfxError(f"Teacher {teacher_model} has {teacher.config.vocab_size} output logits for "
                         f"{len(tokenizer)} tokens.", "use a teacher whose embeddings cover its tokenizer.")
    return teacher.eval().requires_grad_(False)


def build_trainer(ctx):
    config = SFTConfig(**ctx.hf_args, max_length=ctx.args.max_length, assistant_only_loss=False,
                       completion_only_loss=False, packing=False)
    return KDTrainer(model=ctx.model, args=config, train_dataset=ctx.train_dataset, eval_dataset=ctx.eval_dataset,
                     processing_class=ctx.tokenizer, peft_config=ctx.peft_config, callbacks=ctx.callbacks,
                     teacher=load_teacher(ctx.args, ctx.options.teacher_model, ctx.tokenizer, ctx.model),
                     kd_coef=ctx.options.kd_coef, teacher_offload=ctx.options.teacher_offload)
