// The decoder modules. Parameter names follow HF exactly (model.layers.N.self_attn.q_proj.weight, ...), so
// named_parameters() is the checkpoint's tensor list.
#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "introspect/model/decoder.h"
#include "model_impl.h"

namespace introspect::model {

// ---------------------------------------------------------------------------------------------------------
// Modules.

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out}));
}

namespace {
// oneDNN's prepacked linear, the ops Inductor's CPU weight freezing uses; called boxed through the dispatcher.
bool onednn_available() {
  static const bool ok = at::hasMKLDNN() &&
                         c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""}).has_value() &&
                         c10::Dispatcher::singleton().findSchema({"mkldnn::_reorder_linear_weight", ""}).has_value();
  return ok;
}
}  // namespace

void PackedWeight::pack(const torch::Tensor& w, int64_t batch_hint) {
  if (!onednn_available() || w.scalar_type() != torch::kFloat) return;
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_reorder_linear_weight", "");
  torch::jit::Stack stack{w.detach(), c10::IValue(batch_hint)};
  op.callBoxed(&stack);
  data = stack[0].toTensor();
  version = static_cast<int64_t>(w._version());
}

torch::Tensor project(const torch::Tensor& x, const torch::Tensor& w, const PackedWeight& packed) {
  if (!torch::GradMode::is_enabled() && packed.current(w) && x.scalar_type() == torch::kFloat) {
    static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
    torch::jit::Stack stack{x.contiguous(), packed.data, c10::IValue(), c10::IValue("none"),
                            c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
    op.callBoxed(&stack);
    return stack[0].toTensor();
  }
  const auto rows = x.reshape({-1, x.size(-1)});
  if (rows.size(0) > 128 || !rows.is_contiguous()) return torch::matmul(x, w.t());
  auto out_shape = x.sizes().vec();
  out_shape.back() = w.size(0);
  return torch::mm(w, rows.t()).t().contiguous().view(out_shape);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) const {
  auto y = project(x, weight, packed);
  return bias.defined() ? y + bias : y;
}

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim) { weight = register_parameter("weight", torch::empty({vocab, dim})); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps(eps) { weight = register_parameter("weight", torch::empty({dim})); }

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const {
  // On a GPU, LibTorch's fused kernel (one pass forward and backward instead of seven elementwise ops), in fp32;
  // the result takes the promoted dtype as below, rounded once instead of twice.
  if (x.is_cuda()) {
    const auto out_type = at::promote_types(weight.scalar_type(), x.scalar_type());
    return at::rms_norm(x.to(torch::kFloat), {x.size(-1)}, weight.to(torch::kFloat), eps).to(out_type);
  }
  // As HF: normalise in fp32, cast back, then scale.
  const auto xf = x.to(torch::kFloat);
  const auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
  return weight * normed.to(x.scalar_type());
}


AttentionImpl::AttentionImpl(const ModelArch& a)
    : heads(a.num_heads), kv_heads(a.num_kv_heads), head_dim(a.head_dim) {
  q_proj = register_module("q_proj", Linear(a.hidden_size, a.num_heads * a.head_dim, a.attention_bias));
  k_proj = register_module("k_proj", Linear(a.hidden_size, a.num_kv_heads * a.head_dim, a.attention_bias));
  v_proj = register_module("v_proj", Linear(a.hidden_size, a.num_kv_heads * a.head_dim, a.attention_bias));
  o_proj = register_module("o_proj", Linear(a.num_heads * a.head_dim, a.hidden_size, a.o_proj_bias));
  if (a.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(a.head_dim, a.rms_norm_eps));
    k_norm = register_module("k_norm", RMSNorm(a.head_dim, a.rms_norm_eps));
  }
}

namespace {

// HF's rotate_half convention: the two halves of head_dim are the real and imaginary parts.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const auto x1 = x.narrow(-1, 0, half);
  const auto x2 = x.narrow(-1, half, half);
  const auto rotated = torch::cat({-x2, x1}, -1);
  return (x * cos + rotated * sin).to(x.scalar_type());
}

}  // namespace

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const Rope& rope, const torch::Tensor& mask,
                                     KVCache* cache, const torch::Tensor& slots, const torch::Tensor& positions,
                                     int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, heads, head_dim});
  auto k = k_proj(x).view({B, T, kv_heads, head_dim});
  auto v = v_proj(x).view({B, T, kv_heads, head_dim});
  if (!q_norm.is_empty()) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = apply_rope(q.transpose(1, 2), rope.cos, rope.sin);  // [B, H, T, D]
  k = apply_rope(k.transpose(1, 2), rope.cos, rope.sin);
  v = v.transpose(1, 2);
  if (cache) {
    // Write this step's keys and values at their positions, then attend over each slot's prefix. Undefined
    // slots mean rows 0..B-1 (the static decode step, which must not read tensors back to the host).
    auto& ck = cache->k[layer];
    auto& cv = cache->v[layer];
    const auto row_slots = slots.defined() ? slots : torch::arange(B, positions.options());
    const auto slot_index = row_slots.view({B, 1}).expand({B, T});
    const auto flat_slot = slot_index.reshape(-1);
    const auto flat_pos = positions.reshape(-1);
    const auto k_rows = k.transpose(1, 2).reshape({B * T, kv_heads, head_dim}).to(ck.scalar_type());
    const auto v_rows = v.transpose(1, 2).reshape({B * T, kv_heads, head_dim}).to(cv.scalar_type());
    // cache[slot, :, pos, :] = row
    ck.permute({0, 2, 1, 3}).index_put_({flat_slot, flat_pos}, k_rows);
    cv.permute({0, 2, 1, 3}).index_put_({flat_slot, flat_pos}, v_rows);
    const int64_t L = mask.size(-1);
    // The generator keeps its active sequences in slots 0..B-1, so the common case is a view, not a copy.
    const bool leading = !slots.defined() || (slots.size(0) <= ck.size(0) && slots.equal(torch::arange(B, slots.options())));
    k = (leading ? ck.narrow(0, 0, B) : ck.index_select(0, slots)).narrow(2, 0, L).to(q.scalar_type());
    v = (leading ? cv.narrow(0, 0, B) : cv.index_select(0, slots)).narrow(2, 0, L).to(q.scalar_type());
  }
  torch::Tensor out;  // [B, heads, T, head_dim]
  if (cache && q.is_cuda() && T == 1) {
    // A decode step on a GPU: SDPA with a mask and grouped KV heads falls back to a path that copies every cached
    // key and value once per query head. Grouping the query heads by their KV head reads the cache as it is
    // (scores rounded to the model's dtype before the fp32 softmax, as HF's eager attention does).
    const int64_t group = heads / kv_heads, L = k.size(2);
    const auto qg = q.reshape({B, kv_heads, group * T, head_dim});
    auto scores = torch::matmul(qg, k.transpose(-1, -2)).to(torch::kFloat).mul_(1.0 / std::sqrt(double(head_dim)));
    const auto allowed = mask.unsqueeze(2).expand({B, 1, group, T, L}).reshape({B, 1, group * T, L});
    scores.masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    out = torch::matmul(torch::softmax(scores, -1).to(v.scalar_type()), v).view({B, heads, T, head_dim});
  } else {
    // An undefined mask means plain causal attention, which lets SDPA pick its flash kernel on a GPU.
    const std::optional<torch::Tensor> attn_mask = mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt;
    out = at::scaled_dot_product_attention(q, k, v, attn_mask, 0.0, !mask.defined(), std::nullopt, heads != kv_heads);
  }
  return o_proj(out.transpose(1, 2).reshape({B, T, heads * head_dim}));
}

MLPImpl::MLPImpl(const ModelArch& a) {
  gate_proj = register_module("gate_proj", Linear(a.hidden_size, a.intermediate_size, a.mlp_bias));
  up_proj = register_module("up_proj", Linear(a.hidden_size, a.intermediate_size, a.mlp_bias));
  down_proj = register_module("down_proj", Linear(a.intermediate_size, a.hidden_size, a.mlp_bias));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) { return down_proj(torch::silu(gate_proj(x)) * up_proj(x)); }

DecoderLayerImpl::DecoderLayerImpl(const ModelArch& a) {
  input_layernorm = register_module("input_layernorm", RMSNorm(a.hidden_size, a.rms_norm_eps));
  self_attn = register_module("self_attn", Attention(a));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(a.hidden_size, a.rms_norm_eps));
  mlp = register_module("mlp", MLP(a));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const Rope& rope, const torch::Tensor& mask,
                                        KVCache* cache, const torch::Tensor& slots, const torch::Tensor& positions,
                                        int64_t layer) {
  const auto h = x + self_attn->forward(input_layernorm(x), rope, mask, cache, slots, positions, layer);
  return h + mlp(post_attention_layernorm(h));
}

BackboneImpl::BackboneImpl(const ModelArch& a) {
  embed_tokens = register_module("embed_tokens", Embedding(a.vocab_size, a.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < a.num_layers; ++i) layers->push_back(DecoderLayer(a));
  norm = register_module("norm", RMSNorm(a.hidden_size, a.rms_norm_eps));
}

CausalLMModuleImpl::CausalLMModuleImpl(const ModelArch& a) {
  model = register_module("model", Backbone(a));
  if (!a.tie_word_embeddings) lm_head = register_module("lm_head", Linear(a.hidden_size, a.vocab_size, false));
}

// ---------------------------------------------------------------------------------------------------------
// RoPE tables.

torch::Tensor rope_inv_freq(const ModelArch& a) {
  const int64_t half = a.head_dim / 2;
  auto inv_freq = 1.0 / torch::pow(a.rope_theta, torch::arange(0, a.head_dim, 2, torch::kFloat) / a.head_dim);
  inv_freq = inv_freq.to(torch::kFloat);
  const RopeScaling& s = a.rope_scaling;
  if (s.type == "linear") {
    inv_freq = inv_freq / s.factor;
  } else if (s.type == "llama3") {
    // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    const auto wavelen = 2 * M_PI / inv_freq;
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq);
    const auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    const auto medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  TORCH_CHECK(inv_freq.size(0) == half);
  return inv_freq;
}

Rope make_rope(const torch::Tensor& inv_freq, const torch::Tensor& positions, torch::ScalarType dtype) {
  // positions [B, T] -> cos/sin [B, 1, T, head_dim], computed in fp32 as HF does.
  const auto freqs = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  const auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

// ---------------------------------------------------------------------------------------------------------
// Activation checkpointing: run a layer without saving activations, recompute it in the backward.

namespace {

struct LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, torch::Tensor cos,
                               torch::Tensor sin, torch::Tensor mask, DecoderLayerImpl* layer) {
    ctx->save_for_backward({x, cos, sin, mask});
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    return layer->forward(x, Rope{cos, sin}, mask, nullptr, {}, {}, 0);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    auto x = saved[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode grad_on(true);
      y = layer->forward(x, Rope{saved[1], saved[2]}, saved[3], nullptr, {}, {}, 0);
    }
    // Parameter gradients accumulate into .grad as usual; the input's comes back through autograd.
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// CausalLM.

CausalLM::CausalLM(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

const ModelArch& CausalLM::arch() const { return impl_->arch; }
at::ScalarType CausalLM::dtype() const { return impl_->dtype; }
void CausalLM::set_activation_checkpointing(bool on) { impl_->checkpointing = on; }
void CausalLM::to(at::Device device) { impl_->module->to(device); }

void CausalLM::pack_for_inference(int64_t batch_hint) const {
  for (auto& m : impl_->module->modules(/*include_self=*/false)) {
    if (auto* lin = m->as<LinearImpl>()) lin->packed.pack(lin->weight, batch_hint);
  }
  impl_->packed_head.pack(lm_head_weight(), batch_hint);
}

at::Tensor CausalLM::lm_head_weight() const {
  const auto& m = *impl_->module;
  return m.lm_head.is_empty() ? m.model->embed_tokens->weight : m.lm_head->weight;
}

std::vector<std::pair<std::string, at::Tensor>> CausalLM::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : impl_->module->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

std::vector<at::Tensor> CausalLM::parameters() const { return impl_->module->parameters(); }

CausalLM CausalLM::random(const ModelArch& arch, uint64_t seed, at::ScalarType dtype) {
  arch.validate("random init");
  auto impl = std::make_shared<Impl>(arch, dtype);
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : impl->module->named_parameters()) {
    const std::string& name = p.key();
    auto& t = p.value();
    if (name.find("norm") != std::string::npos) {
      t.fill_(1.0);
    } else if (t.dim() == 1) {
      t.zero_();  // biases
    } else {
      t.normal_(0.0, 0.02, gen);
    }
  }
  impl->module->to(dtype);
  return CausalLM(impl);
}

CausalLM::Impl::Impl(const ModelArch& a, at::ScalarType dt)
    : arch(a), dtype(dt), module(CausalLMModule(a)), inv_freq(rope_inv_freq(a)) {}

const torch::Tensor& CausalLM::Impl::inv_freq_on(const torch::Device& device) {
  if (inv_freq.device() == device) return inv_freq;
  if (!inv_freq_device.defined() || inv_freq_device.device() != device) inv_freq_device = inv_freq.to(device);
  return inv_freq_device;
}

ForwardOutput CausalLM::Impl::run(const torch::Tensor& input_ids, const torch::Tensor& positions,
                                  const torch::Tensor& mask, KVCache* cache, const torch::Tensor& slots,
                                  bool want_logits, bool last_logits_only) {
  auto& backbone = *module->model;
  auto h = backbone.embed_tokens(input_ids);
  const Rope rope = make_rope(inv_freq_on(positions.device()), positions, dtype);
  const bool checkpoint = checkpointing && !cache && torch::GradMode::is_enabled();
  for (int64_t i = 0; i < arch.num_layers; ++i) {
    auto* layer = backbone.layers[i]->as<DecoderLayerImpl>();
    h = checkpoint ? LayerCheckpoint::apply(h, rope.cos, rope.sin, mask, layer)
                   : layer->forward(h, rope, mask, cache, slots, positions, i);
  }
  ForwardOutput out;
  out.hidden = backbone.norm(h);
  if (want_logits) {
    const auto w = module->lm_head.is_empty() ? backbone.embed_tokens->weight : module->lm_head->weight;
    const auto h = last_logits_only ? out.hidden.narrow(1, out.hidden.size(1) - 1, 1).contiguous() : out.hidden;
    out.logits = project(h, w, packed_head);
  }
  return out;
}

ForwardOutput CausalLM::forward(const at::Tensor& input_ids, const at::Tensor& position_ids,
                                const at::Tensor& segment_ids, bool want_logits) const {
  TORCH_CHECK(input_ids.dim() == 2 && position_ids.sizes() == input_ids.sizes() &&
                  segment_ids.sizes() == input_ids.sizes(),
              "forward: input_ids, position_ids and segment_ids must all be [B, T]");
  const int64_t T = input_ids.size(1);
  // On a GPU, rows that are one unpadded sequence each need no mask tensor: SDPA's causal flag runs flash attention.
  if (input_ids.is_cuda() && !segment_ids.any().item<bool>())
    return impl_->run(input_ids, position_ids, torch::Tensor(), nullptr, {}, want_logits);
  // mask[b, 0, i, j]: j <= i, same segment, j not padding. The diagonal stays open so padding rows are finite.
  const auto idx = torch::arange(T, torch::dtype(torch::kLong).device(input_ids.device()));
  const auto causal = idx.view({1, T}) <= idx.view({T, 1});
  const auto seg_q = segment_ids.unsqueeze(2);
  const auto seg_k = segment_ids.unsqueeze(1);
  auto mask = causal.unsqueeze(0) & (seg_q == seg_k) & (seg_k >= 0);
  mask = mask | torch::eye(T, torch::dtype(torch::kBool).device(input_ids.device())).unsqueeze(0);
  return impl_->run(input_ids, position_ids, mask.unsqueeze(1), nullptr, {}, want_logits);
}

ForwardOutput CausalLM::forward_padded(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                       bool want_logits) const {
  const auto valid = attention_mask.to(torch::kLong);
  const auto positions = (valid.cumsum(1) - 1).clamp_min(0);
  const auto segments = torch::where(valid > 0, torch::zeros_like(valid), torch::full_like(valid, -1));
  return forward(input_ids, positions, segments, want_logits);
}

ForwardOutput CausalLM::forward_cached(const at::Tensor& input_ids, const at::Tensor& positions,
                                       const at::Tensor& slots, KVCache& cache, bool last_logits_only) const {
  TORCH_CHECK(input_ids.dim() == 2 && positions.sizes() == input_ids.sizes() && slots.dim() == 1 &&
                  slots.size(0) == input_ids.size(0),
              "forward_cached: input_ids and positions must be [B, t] and slots [B]");
  const int64_t max_pos = positions.max().item<int64_t>();
  TORCH_CHECK(max_pos < cache.max_len, "forward_cached: position ", max_pos, " is beyond the KV cache length ",
              cache.max_len);
  const int64_t L = max_pos + 1;
  // mask[b, 0, i, j]: key position j <= query position i.
  const auto key_pos = torch::arange(L, torch::dtype(torch::kLong).device(input_ids.device())).view({1, 1, L});
  const auto mask = (key_pos <= positions.unsqueeze(-1)).unsqueeze(1);
  return impl_->run(input_ids, positions, mask, &cache, slots, /*want_logits=*/true, last_logits_only);
}

ForwardOutput CausalLM::forward_static_step(const at::Tensor& input_ids, const at::Tensor& positions,
                                            KVCache& cache) const {
  TORCH_CHECK(input_ids.dim() == 2 && positions.sizes() == input_ids.sizes() && input_ids.size(0) <= cache.slots,
              "forward_static_step: input_ids and positions must be [B, t] with B <= the cache's slots");
  // Every key position of the cache, masked beyond each row's own position: the shapes never change.
  const auto key_pos =
      torch::arange(cache.max_len, torch::dtype(torch::kLong).device(input_ids.device())).view({1, 1, cache.max_len});
  const auto mask = (key_pos <= positions.unsqueeze(-1)).unsqueeze(1);
  return impl_->run(input_ids, positions, mask, &cache, torch::Tensor(), /*want_logits=*/true);
}

KVCache::KVCache(const ModelArch& a, int64_t slots_, int64_t max_len_, at::ScalarType dtype, at::Device device)
    : slots(slots_), max_len(max_len_) {
  for (int64_t i = 0; i < a.num_layers; ++i) {
    k.push_back(torch::zeros({slots, a.num_kv_heads, max_len, a.head_dim}, torch::dtype(dtype).device(device)));
    v.push_back(torch::zeros({slots, a.num_kv_heads, max_len, a.head_dim}, torch::dtype(dtype).device(device)));
  }
}

int64_t KVCache::bytes_needed(const ModelArch& a, int64_t slots, int64_t max_len, at::ScalarType dtype) {
  return 2 * a.num_layers * slots * a.num_kv_heads * max_len * a.head_dim *
         static_cast<int64_t>(c10::elementSize(dtype));
}

}  // namespace introspect::model
