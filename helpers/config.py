"""The model's shape, read from a Google `bert_config.json` or a Hugging Face `config.json`."""
import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

from .errors import BertError, read_json_file

# hidden_act values and the GELU each one means (Hugging Face's ACT2FN names).
GELU_KINDS = {"gelu": "erf", "gelu_python": "erf", "gelu_new": "tanh", "gelu_fast": "tanh",
              "gelu_pytorch_tanh": "tanh", "gelu_tanh": "tanh"}


# Far beyond any BERT (BERT-Large: 24 layers, hidden 1024, 16 heads, FFN 4096, 30522 tokens, 512 positions).
_SIZE_LIMITS = {"num_hidden_layers": 1024, "hidden_size": 65536, "num_attention_heads": 4096,
                "intermediate_size": 262144, "vocab_size": 1 << 24, "max_position_embeddings": 65536,
                "type_vocab_size": 1024}


@dataclass(frozen=True)
class BertConfig:
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    do_lower_case: Optional[bool] = None   # None: nothing said so; the tokenizer asks the vocabulary

    def __post_init__(self):
        for name, limit in _SIZE_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BertError(f"model config: {name} must be a positive integer, got {value!r}")
            if value > limit:   # before anything is sized by it: a typo must not exhaust memory
                raise BertError(f"model config: {name} {value} is beyond the supported maximum of {limit}")
        if self.hidden_size % self.num_attention_heads:
            raise BertError(f"model config: hidden_size {self.hidden_size} is not a multiple of "
                            f"num_attention_heads {self.num_attention_heads}")
        if not isinstance(self.layer_norm_eps, (int, float)) or isinstance(self.layer_norm_eps, bool) \
                or not 0 < self.layer_norm_eps < 1:
            raise BertError(f"model config: layer_norm_eps must be a number in (0, 1), got {self.layer_norm_eps!r}")
        if self.do_lower_case is not None and not isinstance(self.do_lower_case, bool):
            raise BertError(f"model config: do_lower_case must be true or false, got {self.do_lower_case!r}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in GELU_KINDS:
            raise BertError(f"model config: hidden_act {self.hidden_act!r} is not supported "
                            f"(one of {', '.join(sorted(GELU_KINDS))})")

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu(self):
        """'erf' (exact GELU, BERT's own) or 'tanh' (the approximation demoBERT's TensorRT network builds)."""
        return GELU_KINDS[self.hidden_act]

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def find_config_file(path):
    """`path` may be a config file or a folder holding bert_config.json (upstream's -c) or config.json (HF)."""
    if os.path.isdir(path):
        for name in ("bert_config.json", "config.json"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise BertError(f"no bert_config.json or config.json in {path}")
    if os.path.isfile(path):
        return path
    raise BertError(f"config not found: {path}")


def load_config(path):
    """Read the model config; lower-casing comes from the config or tokenizer_config.json beside it, else it stays
    unstated (None) and the tokenizer tells it from the vocabulary: Google's bert_config.json never says, and a
    cased model's vocabulary lower-cased would turn every capitalised word into other pieces, silently."""
    config_file = find_config_file(path)
    data = read_json_file(config_file, "config")
    if not isinstance(data, dict):
        raise BertError(f"config {config_file} is not a JSON object")
    missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
               if k not in data]
    if missing:
        raise BertError(f"config {config_file} lacks {', '.join(missing)}")
    position = data.get("position_embedding_type", "absolute")
    if position != "absolute":   # relative_key(_query) models add distance embeddings inside attention
        raise BertError(f"config {config_file}: position_embedding_type {position!r} is not supported (absolute only)")
    data = dict(data)
    tokenizer_config = os.path.join(os.path.dirname(config_file), "tokenizer_config.json")
    if "do_lower_case" not in data and os.path.isfile(tokenizer_config):
        try:   # a hint only: an unreadable or malformed tokenizer_config.json is ignored
            tokenizer_data = read_json_file(tokenizer_config, "tokenizer config")
        except BertError:
            tokenizer_data = None
        lower = tokenizer_data.get("do_lower_case") if isinstance(tokenizer_data, dict) else None
        if isinstance(lower, bool):
            data["do_lower_case"] = lower
    if "layer_norm_eps" not in data:
        data["layer_norm_eps"] = 1e-12
    return BertConfig.from_dict(data)
