"""OPT architecture description: one dataclass, named presets, readers for HF and metaseq configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OPTConfig:
    """Shape and layout of an OPT decoder.

    ``pre_layer_norm`` is False only for the 350m variant (post-LN, no final layer norm);
    ``word_embed_dim`` differs from ``hidden`` only there too (bias-free project_in/out).
    """

    n_layers: int = 12
    hidden: int = 768
    n_heads: int = 12
    ffn_hidden: int = 3072
    vocab_size: int = 50272
    max_positions: int = 2048
    word_embed_dim: int = 768
    pre_layer_norm: bool = True
    final_layer_norm: bool = True
    layer_norm_eps: float = 1e-5
    pad_id: int = 1
    bos_id: int = 2
    eos_id: int = 2

    #: learned position table rows reserved before position 0 (OPT's ``offset``).
    position_offset = 2

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by n_heads {self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def has_projections(self) -> bool:
        return self.word_embed_dim != self.hidden

    def replace(self, **changes: Any) -> OPTConfig:
        return dataclasses.replace(self, **changes)

    # -- Hugging Face ``config.json`` ---------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> OPTConfig:
        pre_ln = bool(d.get("do_layer_norm_before", True))
        hidden = int(d["hidden_size"])
        return cls(
            n_layers=int(d["num_hidden_layers"]),
            hidden=hidden,
            n_heads=int(d["num_attention_heads"]),
            ffn_hidden=int(d["ffn_dim"]),
            vocab_size=int(d.get("vocab_size", 50272)),
            max_positions=int(d.get("max_position_embeddings", 2048)),
            word_embed_dim=int(d.get("word_embed_proj_dim") or hidden),
            pre_layer_norm=pre_ln,
            final_layer_norm=pre_ln and not d.get("_remove_final_layer_norm", False),
            pad_id=int(d.get("pad_token_id", 1)),
            bos_id=int(d.get("bos_token_id", 2)),
            eos_id=int(d.get("eos_token_id", 2)),
        )

    def to_hf_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["OPTForCausalLM"],
            "model_type": "opt",
            "num_hidden_layers": self.n_layers,
            "hidden_size": self.hidden,
            "num_attention_heads": self.n_heads,
            "ffn_dim": self.ffn_hidden,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_positions,
            "word_embed_proj_dim": self.word_embed_dim,
            "do_layer_norm_before": self.pre_layer_norm,
            "_remove_final_layer_norm": self.pre_layer_norm and not self.final_layer_norm,
            "activation_function": "relu",
            "enable_bias": True,
            "layer_norm_elementwise_affine": True,
            "pad_token_id": self.pad_id,
            "bos_token_id": self.bos_id,
            "eos_token_id": self.eos_id,
            "tie_word_embeddings": True,
        }

    # -- metaseq ``cfg`` (model args) ---------------------------------------------------------

    @classmethod
    def from_metaseq_args(cls, args: dict[str, Any], vocab_size: int) -> OPTConfig:
        """Build from metaseq model args (already turned into a plain dict).

        The vocabulary size is not in the args: it comes from the embedding table.
        """
        hidden = int(args["decoder_embed_dim"])
        pre_ln = bool(args.get("decoder_normalize_before", True))
        return cls(
            n_layers=int(args["decoder_layers"]),
            hidden=hidden,
            n_heads=int(args["decoder_attention_heads"]),
            ffn_hidden=int(args.get("decoder_ffn_embed_dim") or 4 * hidden),
            vocab_size=vocab_size,
            max_positions=int(args.get("max_target_positions") or 2048),
            word_embed_dim=int(args.get("decoder_input_dim") or hidden),
            pre_layer_norm=pre_ln,
            final_layer_norm=pre_ln,
        )


def _preset(n_layers: int, hidden: int, n_heads: int, **extra: Any) -> OPTConfig:
    return OPTConfig(
        n_layers=n_layers,
        hidden=hidden,
        n_heads=n_heads,
        ffn_hidden=4 * hidden,
        word_embed_dim=extra.pop("word_embed_dim", hidden),
        **extra,
    )


PRESETS: dict[str, OPTConfig] = {
    "opt-125m": _preset(12, 768, 12),
    "opt-350m": _preset(24, 1024, 16, word_embed_dim=512, pre_layer_norm=False, final_layer_norm=False),
    "opt-1.3b": _preset(24, 2048, 32),
    "opt-2.7b": _preset(32, 2560, 32),
    "opt-6.7b": _preset(32, 4096, 32),
    "opt-13b": _preset(40, 5120, 40),
    "opt-30b": _preset(48, 7168, 56),
    "opt-66b": _preset(64, 9216, 72),
    "opt-175b": _preset(96, 12288, 96),
}
