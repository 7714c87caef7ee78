// introspect generate: prompts in (JSONL), samples out (JSONL), on the engine's own generator.
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "introspect/config/config.h"
#include "introspect/core/runtime.h"
#include "introspect/io/log.h"
#include "introspect/io/progress.h"
#include "introspect/model/decoder.h"
#include "introspect/rollout/generator.h"
#include "introspect/tokenizer/prompt_format.h"
#include "introspect/tokenizer/tokenizer.h"

namespace introspect::cli {
namespace {

// {"prompt": text} rows go through the chat template; {"prompt_ids": [...]} rows are used as they are.
// `format` is called on the first text prompt only, so id-only files need no tokenizer or template.
std::vector<rollout::Prompt> read_prompts(const std::string& path,
                                          const std::function<const tokenizer::PromptFormatter*()>& format) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open the prompts file");
  std::vector<rollout::Prompt> prompts;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n) + ": ";
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(where + "not valid JSON: " + e.what());
    }
    rollout::Prompt p;
    if (row.contains("prompt_ids")) {
      if (!row["prompt_ids"].is_array()) throw std::runtime_error(where + "prompt_ids must be an array of token ids");
      p.ids = row["prompt_ids"].get<std::vector<int32_t>>();
    } else if (row.contains("prompt") && row["prompt"].is_string()) {
      const auto* formatter = format();
      if (!formatter) throw std::runtime_error(where + "a text prompt needs a tokenizer (--tokenizer), or give prompt_ids");
      p.ids = formatter->encode(row["prompt"].get<std::string>());
    } else {
      throw std::runtime_error(where + "expected a \"prompt\" string or a \"prompt_ids\" array");
    }
    if (row.contains("max_new_tokens")) p.max_new_tokens = row["max_new_tokens"].get<int64_t>();
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) throw std::runtime_error(path + ": no prompts");
  return prompts;
}

}  // namespace

int generate(const GenerateOptions& o) {
  try {
    const auto cfg = o.config.empty() ? config::from_overrides(o.overrides) : config::load(o.config, o.overrides);
    log::init(cfg.log.level);
    core::init_torch(cfg.run.threads);
    // The tokenizer (and so the chat template) is optional when every prompt comes as ids.
    const std::string tok_path = o.tokenizer.empty() ? o.model : o.tokenizer;
    const bool has_tokenizer = !o.tokenizer.empty() || std::filesystem::exists(o.model + "/tokenizer.json") ||
                               std::filesystem::exists(o.model + "/tokenizer.model");
    std::unique_ptr<tokenizer::Tokenizer> tok;
    if (has_tokenizer) tok = tokenizer::Tokenizer::load(tok_path);
    std::optional<tokenizer::PromptFormatter> formatter;
    const auto prompts = read_prompts(o.prompts, [&]() -> const tokenizer::PromptFormatter* {
      if (!tok) return nullptr;
      if (!formatter) formatter.emplace(cfg.data, *tok, tok_path, o.chat_template);
      return &*formatter;
    });
    const auto model = model::CausalLM::load(o.model, cfg.model.dtype == "bf16" ? at::kBFloat16 : at::kFloat);

    const auto& r = cfg.rollout;
    const auto params = rollout::sampling_params(r);

    std::ofstream out(o.out, std::ios::trunc);
    if (!out) throw std::runtime_error(o.out + ": cannot write");
    const int64_t total = static_cast<int64_t>(prompts.size()) * params.n;
    io::Progress bar("generate", total, io::Progress::resolve_mode(cfg.log.progress, 2), cfg.log.progress_interval_s,
                     std::cerr);
    const rollout::Generator generator(model, r.max_batch, r.kv_budget_mb << 20, tok.get());
    const auto samples = generator.generate(prompts, params, [&](int64_t done) {
      (void)done;
      bar.advance();
    });
    bar.finish();
    int64_t tokens = 0;
    for (const auto& s : samples) {
      tokens += static_cast<int64_t>(s.tokens.size());
      nlohmann::ordered_json line{{"prompt_index", s.prompt_index}, {"sample_index", s.sample_index},
                          {"text", tok ? nlohmann::ordered_json(tok->decode(s.tokens, /*skip_special=*/true))
                                       : nlohmann::ordered_json(nullptr)},
                          {"ids", s.tokens},
                          {"logprobs", s.logprobs}, {"finish_reason", rollout::finish_reason_name(s.finish)}};
      out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    log::info("wrote ", samples.size(), " samples (", tokens, " tokens) to ", o.out);
    return 0;
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "introspect generate: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace introspect::cli
