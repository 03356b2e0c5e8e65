"""Models: one resolution of --model/--model_type/--adapters (path, model type, template, adapter base) and the
loading of weights, tokenizers and dtypes, shared by training, engines, rewards and commands.

Below training, beside data/templates/engines/rewards: nothing here imports torch at module level.
"""

from rlhfx.models.load import (LoadedModel, bf16_enabled, check_flash_attn_device, generation_config, load_causal_lm,
                               load_policy, load_reference, load_tokenizer, lora_config, merge_adapter,
                               model_load_kwargs, quant_bits, tied_targets, torch_dtype, trained_weights_dtype)
from rlhfx.models.resolve import (ResolvedModel, adapter_base, apply_run_system, check_finished_run,
                                  check_model_source, hub_id_for, is_adapter, policy_model_type, read_json_file,
                                  resolve_model, resolve_model_path, run_args)
from rlhfx.models.spec import ModelSpec, model_spec_from_args, resolve_model_spec

__all__ = ["LoadedModel", "ModelSpec", "ResolvedModel", "adapter_base", "apply_run_system", "bf16_enabled",
           "check_finished_run", "check_flash_attn_device", "check_model_source", "generation_config", "hub_id_for", "is_adapter",
           "load_causal_lm", "load_policy", "load_reference", "load_tokenizer", "lora_config", "merge_adapter",
           "model_load_kwargs", "model_spec_from_args", "policy_model_type", "quant_bits", "read_json_file",
           "resolve_model", "resolve_model_path", "resolve_model_spec", "run_args", "tied_targets", "torch_dtype",
           "trained_weights_dtype"]
