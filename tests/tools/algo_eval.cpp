// Evaluates the algorithm functions on tensors given as JSON, one case per stdin line, for the Python
// reference test (tests/parity/algo_reference.py). Each output line holds the case's results as nested lists.
#include <torch/torch.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "introspect/algo/core_algos.h"

using nlohmann::json;
namespace algo = introspect::algo;

namespace {

at::Tensor tensor(const json& j, at::ScalarType type = at::kDouble) {
  if (j.is_array() && !j.empty() && j[0].is_array()) {
    std::vector<at::Tensor> rows;
    for (const auto& r : j) rows.push_back(tensor(r, type));
    return torch::stack(rows);
  }
  return torch::tensor(j.get<std::vector<double>>(), torch::kDouble).to(type);
}

json to_json(const at::Tensor& t) {
  const auto d = t.to(torch::kDouble).contiguous();
  if (d.dim() == 0) return d.item<double>();
  if (d.dim() == 1) return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
  json rows = json::array();
  for (int64_t i = 0; i < d.size(0); ++i) rows.push_back(to_json(d[i]));
  return rows;
}

json evaluate(const json& c) {
  const std::string fn = c.at("fn");
  const auto& o = c.value("options", json::object());
  if (fn == "advantage") {
    algo::AdvantageOptions a;
    a.norm_by_std = o.value("norm_by_std", true);
    a.unbiased_std = o.value("unbiased_std", true);
    a.epsilon = o.value("epsilon", 1e-6);
    a.epsilon_inside_sqrt = o.value("epsilon_inside_sqrt", false);
    const auto out = algo::advantage_estimator(c.at("name"))(tensor(c.at("scores"), at::kFloat),
                                                             tensor(c.at("groups"), at::kLong), a);
    return {{"advantages", to_json(out)}};
  }
  if (fn == "policy_loss") {
    algo::PolicyLossOptions p;
    p.clip_ratio_low = o.value("clip_ratio_low", 0.2);
    p.clip_ratio_high = o.value("clip_ratio_high", 0.2);
    p.clip_ratio_c = o.value("clip_ratio_c", 3.0);
    auto logp = tensor(c.at("logp")).requires_grad_(true);
    const auto mask = tensor(c.at("mask"));
    const auto t = algo::policy_loss("vanilla")(logp, tensor(c.at("old_logp")), tensor(c.at("advantages")), p);
    const auto loss = algo::aggregate_loss(t.token_loss, mask, c.at("agg"));
    loss.backward();
    return {{"token_loss", to_json(t.token_loss.detach())},
            {"loss", to_json(loss.detach())},
            {"grad", to_json(logp.grad())},
            {"clipfrac", to_json(algo::masked_mean((t.clipped_high | t.clipped_low).to(at::kDouble), mask))},
            {"clipfrac_lower", to_json(algo::masked_mean(t.dual_clipped.to(at::kDouble), mask))},
            {"ppo_kl", to_json(algo::masked_mean(t.neg_log_ratio, mask))}};
  }
  if (fn == "aggregate") {
    algo::AggregationScale s;
    s.global_tokens = c.value("global_tokens", -1.0);
    s.global_sequences = c.value("global_sequences", -1.0);
    s.loss_scale_factor = c.value("loss_scale_factor", -1.0);
    s.dp_size = c.value("dp_size", 1);
    return {{"loss", to_json(algo::aggregate_loss(tensor(c.at("loss")), tensor(c.at("mask")), c.at("mode"), s))}};
  }
  if (fn == "kl") {
    auto logp = tensor(c.at("logp")).requires_grad_(true);
    const auto kl = algo::kl_penalty(logp, tensor(c.at("ref_logp")), c.at("type"));
    kl.sum().backward();
    return {{"kl", to_json(kl.detach())}, {"grad", to_json(logp.grad())}};
  }
  throw std::invalid_argument("unknown fn " + fn);
}

}  // namespace

int main() {
  std::string line;
  for (int64_t n = 1; std::getline(std::cin, line); ++n) {
    try {
      std::cout << evaluate(json::parse(line)).dump() << "\n";
    } catch (const std::exception& e) {
      std::cerr << "stdin:" << n << ": " << e.what() << "\n";
      return 1;
    }
  }
  return 0;
}
