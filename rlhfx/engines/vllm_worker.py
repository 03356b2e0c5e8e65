"""rlhfx's calls in each of vLLM's worker processes: vLLM mixes this class into its worker class
(`LLM(worker_extension_cls=...)`), and the engine calls its methods with `collective_rpc`, so with tensor
parallelism every worker loads its own shards of the new weights.

Weights are loaded in place with the worker's `reload_weights`, one call per push (vLLM finishes each layer once
all of its tensors have arrived). With tied input/output embeddings the trainer's `named_parameters()` has no
`lm_head.weight`, and vLLM's reload would put the old head back; the embeddings are loaded as the head as well then.
"""

from rlhfx.engines.weight_sync import WeightGroup


class WeightLoading:
    def rlhfx_load_weights(self, named) -> None:
        """(name, tensor) pairs (Hugging Face names), loaded in place."""
        config = self.model_config.hf_config
        tied = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config,
                       "tie_word_embeddings", False)

        def weights():
            for name, tensor in named:
                yield name, tensor
                if tied and name.endswith("embed_tokens.weight"):
                    yield "lm_head.weight", tensor

        self.reload_weights(weights_iterator=weights())

    def rlhfx_join_weight_group(self, host: str, port: int, first_rank: int, world: int, backend: str) -> None:
        """Joins the weight-sync group (rlhfx.engines.weight_sync) as rank first_rank + this worker's rank."""
        self.rlhfx_weight_group = WeightGroup(host, port, first_rank + self.rank, world, backend)

    def rlhfx_receive_weights(self, specs: list) -> None:
        """The weights rank 0 broadcasts over the group, each loaded as it arrives."""
        self.rlhfx_load_weights(self.rlhfx_weight_group.receive(specs))
