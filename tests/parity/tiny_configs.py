"""Random tiny configs of each supported model type, shared by the parity scripts."""
import torch
from transformers import LlamaConfig, Qwen2Config, Qwen3Config

common = dict(vocab_size=300, hidden_size=64, intermediate_size=96, max_position_embeddings=256,
              attn_implementation="eager")
CONFIGS = {
    # GQA 4:2 and Llama-3.1 rope scaling; head_dim 16 puts frequencies in all three bands of the llama3 rule.
    "llama-gqa-rope-llama3": LlamaConfig(**common, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                       "high_freq_factor": 4.0,
                                                       "original_max_position_embeddings": 32}),
    "qwen2-bias": Qwen2Config(**common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              rope_theta=1000000.0, tie_word_embeddings=False),
    "qwen3-qknorm-tied": Qwen3Config(**common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                     head_dim=32, tie_word_embeddings=True),
    "qwen3-qknorm-untied": Qwen3Config(**common, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                       head_dim=16, tie_word_embeddings=False),
}


def randomise(model):
    """Weights big enough that logits are O(1..10): a 1e-4 tolerance then means something."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0.0, 0.5)  # biases
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5 * 2.0)


