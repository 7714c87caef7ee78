// HF checkpoint folders in and out: config.json plus safetensors (sharded or not), by HF tensor name.
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <memory>

#include "introspect/io/log.h"
#include "introspect/io/safetensors.h"
#include "model_impl.h"

namespace introspect::model {
namespace fs = std::filesystem;

namespace {

std::string shape_text(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

torch::ScalarType torch_dtype(io::DType d, const std::string& file, const std::string& tensor) {
  switch (d) {
    case io::DType::kF32: return torch::kFloat;
    case io::DType::kBF16: return torch::kBFloat16;
    case io::DType::kF16: return torch::kHalf;
    default:
      throw io::SafetensorsError(file + ": tensor '" + tensor + "': dtype " + io::dtype_name(d) +
                                 " is not supported for weights (F32, BF16 and F16 are)");
  }
}

io::DType safetensors_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return io::DType::kF32;
    case torch::kBFloat16: return io::DType::kBF16;
    case torch::kHalf: return io::DType::kF16;
    default: throw std::invalid_argument("cannot save a tensor of dtype " + std::string(c10::toString(t)));
  }
}

}  // namespace

CausalLM CausalLM::load(const fs::path& dir, at::ScalarType dtype) {
  const ModelArch arch = parse_hf_config(dir);
  auto impl = std::make_shared<Impl>(arch, dtype);
  impl->module->to(dtype);
  const auto weight_map = io::checkpoint_weight_map(dir);
  std::map<fs::path, std::unique_ptr<io::SafetensorsFile>> files;
  torch::NoGradGuard no_grad;
  size_t loaded = 0;
  for (auto& p : impl->module->named_parameters()) {
    const std::string& name = p.key();
    auto& param = p.value();
    const auto where = weight_map.find(name);
    if (where == weight_map.end()) {
      throw io::SafetensorsError(dir.string() + ": missing tensor '" + name + "' (shape " +
                                 shape_text(param.sizes()) + " from config.json)");
    }
    auto& file = files[where->second];
    if (!file) file = std::make_unique<io::SafetensorsFile>(where->second);
    const io::TensorInfo* info = file->header().find(name);
    if (!info) {
      throw io::SafetensorsError(file->name() + ": tensor '" + name +
                                 "' is listed in the index but absent from this file");
    }
    if (at::IntArrayRef(info->shape) != param.sizes()) {
      throw io::SafetensorsError(file->name() + ": tensor '" + name + "' has shape " + shape_text(info->shape) +
                                 " but config.json implies " + shape_text(param.sizes()));
    }
    // Zero-copy view of the mapped bytes; copy_ converts into the parameter, the only copy made.
    file->map().prefetch(info->begin, info->end - info->begin);
    const auto src = torch::from_blob(const_cast<uint8_t*>(file->bytes(*info)), info->shape,
                                      torch::dtype(torch_dtype(info->dtype, file->name(), name)));
    param.copy_(src);
    file->map().release(info->begin, info->end - info->begin);
    ++loaded;
  }
  const size_t extra = weight_map.size() - loaded;
  if (extra > 0) log::debug(dir.string(), ": ", extra, " checkpoint tensors unused (e.g. a tied lm_head)");
  return CausalLM(impl);
}

void CausalLM::save(const fs::path& dir, uint64_t max_shard_bytes, const fs::path& tokenizer_source) const {
  fs::create_directories(dir);
  std::vector<torch::Tensor> keep;  // owns contiguous CPU copies while writing
  std::vector<io::TensorBytes> tensors;
  for (const auto& [name, t] : named_parameters()) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    const auto& c = keep.back();
    tensors.push_back({name, safetensors_dtype(c.scalar_type()), c.sizes().vec(), c.data_ptr(),
                       static_cast<uint64_t>(c.nbytes())});
  }
  io::write_sharded(dir, tensors, max_shard_bytes);
  const char* dtype_name = dtype() == torch::kBFloat16 ? "bfloat16" : dtype() == torch::kHalf ? "float16" : "float32";
  std::ofstream(dir / "config.json", std::ios::trunc) << arch().to_hf_json(dtype_name);
  if (!tokenizer_source.empty()) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                          "generation_config.json", "vocab.json", "merges.txt"}) {
      if (fs::exists(tokenizer_source / f)) {
        fs::copy_file(tokenizer_source / f, dir / f, fs::copy_options::overwrite_existing);
      }
    }
  }
}

}  // namespace introspect::model
