// Test tool for the Python parity checks: loads a checkpoint folder, runs the padded training forward on the
// batch in a JSON file ({"input_ids": [[...]], "attention_mask": [[...]]}), and writes logits and hidden states
// as safetensors. With --export DIR it also re-saves the loaded model with our writer.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "introspect/core/runtime.h"
#include "introspect/io/safetensors.h"
#include "introspect/model/decoder.h"

namespace {
at::Tensor matrix(const nlohmann::json& rows) {
  std::vector<int64_t> flat;
  for (const auto& r : rows)
    for (const auto& v : r) flat.push_back(v.get<int64_t>());
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(rows.size()), -1});
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 6) {
    std::cerr << "usage: model_forward MODEL_DIR INPUT.json OUT.safetensors [--export DIR]\n";
    return 2;
  }
  try {
    introspect::core::init_torch(0);
    c10::NoGradGuard no_grad;
    const auto model = introspect::model::CausalLM::load(argv[1]);
    std::ifstream in(argv[2]);
    const auto batch = nlohmann::json::parse(in);
    const auto out = model.forward_padded(matrix(batch["input_ids"]), matrix(batch["attention_mask"]));
    const auto logits = out.logits.contiguous();
    const auto hidden = out.hidden.contiguous();
    using introspect::io::DType;
    introspect::io::write_safetensors(
        argv[3], {{"logits", DType::kF32, logits.sizes().vec(), logits.data_ptr(), static_cast<uint64_t>(logits.nbytes())},
                  {"hidden", DType::kF32, hidden.sizes().vec(), hidden.data_ptr(), static_cast<uint64_t>(hidden.nbytes())}});
    if (argc == 6) model.save(argv[5], /*max_shard_bytes=*/100'000, argv[1]);
  } catch (const std::exception& e) {
    std::cerr << "model_forward: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
