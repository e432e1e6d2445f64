"""The readable BERT question-answering forward pass: numpy, float32, padded (B, S) input with a mask.

This is the oracle: every engine (CPU, GPU, TensorRT stand-in) is tested against it, and it is tested against
Hugging Face `BertForQuestionAnswering`. It favours clarity over speed.
"""
import math
from dataclasses import dataclass

import numpy as np

from .config import BertConfig


@dataclass(frozen=True)
class Numerics:
    """The few places where BERT implementations legitimately differ."""
    gelu: str = "erf"          # "erf": BERT's exact GELU; "tanh": the approximation demoBERT builds
    emb_eps: float = 1e-12     # epsilon of the embedding LayerNorm
    ln_eps: float = 1e-12      # epsilon of the two LayerNorms in each layer

    @classmethod
    def of_model(cls, config: BertConfig):
        return cls(gelu=config.gelu, emb_eps=config.layer_norm_eps, ln_eps=config.layer_norm_eps)

    @classmethod
    def demobert(cls, dtype="fp32"):
        """TensorRT's BERT plugins: tanh GELU, no epsilon in emb-LayerNorm, the dtype's machine epsilon in skip-LN."""
        eps = float(np.finfo(np.float16).eps) if dtype == "fp16" else float(np.finfo(np.float32).eps)
        return cls(gelu="tanh", emb_eps=0.0, ln_eps=eps)


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x, kind):
    if kind == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _erf(x):
    # numpy has no erf; math.erf per element is exact, and the reference favours exactness over speed.
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


def linear(x, weights, name):
    """y = x W^T + b with upstream's `{name}_kernel` [out, in] and `{name}_bias`."""
    return x @ weights[f"{name}_kernel"].T + weights[f"{name}_bias"]


def embed(weights, input_ids, segment_ids, positions, eps):
    x = (weights["bert_embeddings_word_embeddings"][input_ids]
         + weights["bert_embeddings_token_type_embeddings"][segment_ids]
         + weights["bert_embeddings_position_embeddings"][positions])
    return layer_norm(x, weights["bert_embeddings_layernorm_gamma"], weights["bert_embeddings_layernorm_beta"], eps)


def attention(x, weights, prefix, config, mask):
    """Multi-head self-attention; `mask` (B, S) with 1 for real tokens: masked keys get zero probability."""
    B, S, E = x.shape
    N, H = config.num_attention_heads, config.head_size

    def heads(t):  # (B, S, E) -> (B, N, S, H)
        return t.reshape(B, S, N, H).transpose(0, 2, 1, 3)

    q = heads(linear(x, weights, f"{prefix}attention_self_query"))
    k = heads(linear(x, weights, f"{prefix}attention_self_key"))
    v = heads(linear(x, weights, f"{prefix}attention_self_value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(H)
    scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, S, E)
    return linear(context, weights, f"{prefix}attention_output_dense")


def encoder_layer(x, weights, n, config, mask, numerics):
    p = f"l{n}_"
    a = layer_norm(attention(x, weights, p, config, mask) + x,
                   weights[f"{p}attention_output_layernorm_gamma"], weights[f"{p}attention_output_layernorm_beta"],
                   numerics.ln_eps)
    h = gelu(linear(a, weights, f"{p}intermediate_dense"), numerics.gelu)
    return layer_norm(linear(h, weights, f"{p}output_dense") + a,
                      weights[f"{p}output_layernorm_gamma"], weights[f"{p}output_layernorm_beta"], numerics.ln_eps)


def forward(weights, config: BertConfig, input_ids, segment_ids, input_mask, numerics: Numerics = None):
    """Start/end logits (B, S, 2) float32 for int (B, S) inputs. Rows of fully masked sequences are not meaningful."""
    numerics = numerics or Numerics.of_model(config)
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items() if not k.endswith("_amax")}
    input_ids, segment_ids, mask = (np.asarray(a, dtype=np.int64) for a in (input_ids, segment_ids, input_mask))
    positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
    x = embed(w, input_ids, segment_ids, positions, numerics.emb_eps)
    for n in range(config.num_hidden_layers):
        x = encoder_layer(x, w, n, config, mask, numerics)
    logits = x @ w["cls_squad_output_weights"].T + w["cls_squad_output_bias"]
    return logits.astype(np.float32)
