// The `introspect` command line. Each subcommand appears here only once it works.
#include <CLI/CLI.hpp>

#include <fstream>
#include <map>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "introspect/config/config.h"
#include "introspect/core/runtime.h"
#include "introspect/io/log.h"
#include "introspect/kernels/smoke.h"
#include "introspect/tokenizer/tokenizer.h"
#include "introspect/version.h"

namespace {

std::string version_text() {
  std::string cuda = introspect::kernels::built_with_cuda()
                         ? std::string("CUDA kernels for sm ") + INTROSPECT_CUDA_ARCHITECTURES
                         : std::string("no CUDA kernels");
  return std::string("introspect ") + INTROSPECT_VERSION + " (LibTorch " + introspect::core::torch_version() + ", " +
         cuda + ")";
}

int config_check(const std::string& file, const std::vector<std::string>& overrides) {
  try {
    const auto config = introspect::config::load(file, overrides);
    std::cout << introspect::config::to_yaml(config);
    return 0;
  } catch (const introspect::config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

int config_docs(const std::string& out) {
  const std::string md = introspect::config::reference_markdown();
  if (out.empty()) {
    std::cout << md;
    return 0;
  }
  std::ofstream f(out, std::ios::trunc);
  f << md;
  if (!f.flush()) {
    std::cerr << "cannot write " << out << "\n";
    return 1;
  }
  return 0;
}

// Each stdin line is a JSON string (so texts may hold newlines); each output line is its JSON id array.
// With --decode, each line is a JSON id array and the output a JSON string.
int tokenize(const std::string& path, bool add_special, bool decode, bool skip_special) {
  std::unique_ptr<introspect::tokenizer::Tokenizer> tok;
  try {
    tok = introspect::tokenizer::Tokenizer::load(path);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  std::string line;
  for (int64_t n = 1; std::getline(std::cin, line); ++n) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (decode) {
        if (!j.is_array()) throw std::invalid_argument("expected a JSON array of token ids");
        const auto text = tok->decode(j.get<std::vector<int32_t>>(), skip_special);
        std::cout << nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      } else {
        if (!j.is_string()) throw std::invalid_argument("expected a JSON string");
        std::cout << nlohmann::json(tok->encode(j.get<std::string>(), add_special)).dump() << "\n";
      }
    } catch (const std::exception& e) {
      std::cerr << "stdin:" << n << ": " << e.what() << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"introspect: native C++ RL post-training for reasoning LLMs"};
  app.set_version_flag("--version", version_text());
  app.require_subcommand(1);

  auto* config = app.add_subcommand("config", "Inspect and document the config schema");
  config->require_subcommand(1);

  std::string check_file;
  std::vector<std::string> check_overrides;
  auto* check = config->add_subcommand("check", "Print the resolved config, or every error in it (exit 1)");
  check->add_option("file", check_file, "YAML config (may inherit others with base:)")->required()->check(
      CLI::ExistingFile);
  check->add_option("overrides", check_overrides, "Dotted overrides such as train.lr=1e-6 rollout.n=16");

  std::string docs_out;
  auto* docs = config->add_subcommand("docs", "Write the config reference (docs/config.md) from the schema");
  docs->add_option("--out", docs_out, "Output file; stdout when omitted");

  std::string tokenizer_path;
  bool add_special = false, decode = false, skip_special = false;
  auto* tokenize_cmd = app.add_subcommand(
      "tokenize", "Encode JSON-string lines from stdin to JSON id arrays (or decode them with --decode)");
  tokenize_cmd->add_option("--tokenizer", tokenizer_path, "tokenizer.json, tokenizer.model, or a checkpoint folder")
      ->required();
  tokenize_cmd->add_flag("--add-special", add_special, "Add the checkpoint's BOS/EOS tokens");
  tokenize_cmd->add_flag("--decode", decode, "Decode id arrays to strings instead");
  tokenize_cmd->add_flag("--skip-special", skip_special, "With --decode: drop special tokens");

  introspect::cli::GenerateOptions gen;
  std::map<std::string, std::string> gen_flags;  // flag -> config key it overrides
  auto* generate_cmd = app.add_subcommand("generate", "Sample completions for a JSONL file of prompts");
  generate_cmd->add_option("--model", gen.model, "HF checkpoint folder")->required()->check(CLI::ExistingDirectory);
  generate_cmd->add_option("--tokenizer", gen.tokenizer, "Tokenizer file or folder (default: the model folder)");
  generate_cmd->add_option("--prompts", gen.prompts, "JSONL of {\"prompt\": text} or {\"prompt_ids\": [...]}")
      ->required();
  generate_cmd->add_option("--out", gen.out, "Output JSONL: text, ids, logprobs, finish_reason")->required();
  generate_cmd->add_option("--config", gen.config, "YAML config (rollout.*, data.chat_template, ...)");
  generate_cmd->add_option("--template", gen.chat_template, "Chat template: auto, qwen3, llama3, plain, custom");
  for (const auto& [flag, key] : std::vector<std::pair<std::string, std::string>>{
           {"--n", "rollout.n"}, {"--max-new-tokens", "rollout.max_new_tokens"},
           {"--temperature", "rollout.temperature"}, {"--top-p", "rollout.top_p"}, {"--top-k", "rollout.top_k"},
           {"--seed", "rollout.seed"}, {"--max-batch", "rollout.max_batch"}}) {
    generate_cmd->add_option(flag, gen_flags[key], "Sets " + key);
  }
  bool greedy = false;
  generate_cmd->add_flag("--greedy", greedy, "Greedy decoding (rollout.temperature=0)");

  introspect::cli::TrainOptions train_opts;
  auto* train_cmd = app.add_subcommand(
      "train", "Train from a config (GRPO or SFT); without --config, run the built-in demo (SFT warm start, then GRPO)");
  train_cmd->add_option("--config", train_opts.config, "YAML config")->check(CLI::ExistingFile);
  train_cmd->add_option("--out", train_opts.out, "Run folder (overrides run.out_dir)");
  train_cmd->add_option("--resume", train_opts.resume, "auto: continue from the latest complete checkpoint");
  train_cmd->add_option("overrides", train_opts.overrides, "Dotted overrides such as train.total_steps=200");

  introspect::cli::EvalOptions eval_opts;
  auto* eval_cmd = app.add_subcommand(
      "eval", "Sample n answers per problem and report pass@1, pass@k and maj@k (results.json, problems.jsonl)");
  eval_cmd->add_option("--model", eval_opts.model, "HF checkpoint folder (default: model.path)");
  eval_cmd->add_option("--data", eval_opts.data, "JSONL or JSON array, fields from data.* (default: data.eval_path)");
  eval_cmd->add_option("--config", eval_opts.config, "YAML config (data.*, rollout.*, reward.math.*)")
      ->check(CLI::ExistingFile);
  eval_cmd->add_option("--n", eval_opts.n, "Samples per problem (default: rollout.n from --config or an override; 1)")
      ->check(CLI::PositiveNumber);
  eval_cmd->add_option("--k", eval_opts.ks, "k of pass@k and maj@k, e.g. 1,4,16 (default: 1, 2, 4, ... up to n, n)");
  eval_cmd->add_option("--out", eval_opts.out, "Folder for results.json and problems.jsonl (default: runs/eval)");
  eval_cmd->add_option("--template", eval_opts.chat_template, "Chat template: auto, qwen3, llama3, plain, custom");
  eval_cmd->add_option("--limit", eval_opts.limit, "Evaluate the first N problems only")->check(CLI::PositiveNumber);
  eval_cmd->add_option("overrides", eval_opts.overrides, "Dotted overrides such as rollout.temperature=0.6");

  introspect::cli::VerifyOptions verify_opts;
  auto* verify_cmd = app.add_subcommand(
      "verify", "Check math answers: {\"gold\", \"pred\"} JSONL lines in, {\"equal\": true|false} lines out");
  verify_cmd->add_option("--cases", verify_opts.cases, "JSONL with gold and pred per line")
      ->required()
      ->check(CLI::ExistingFile);
  verify_cmd->add_option("--timeout", verify_opts.timeout_s, "Seconds per line before it counts as not equal")
      ->check(CLI::PositiveNumber);
  verify_cmd->add_flag("--extract", verify_opts.extract,
                       "pred is a whole model response: compare the answer it gives (boxed, \"the answer is\", ...)");

  // The options every analysis shares: the model, the problems, the config and where the results go.
  auto add_analysis_options = [](CLI::App* cmd, auto& o, const std::string& config_keys, const std::string& example) {
    cmd->add_option("--model", o.model, "HF checkpoint folder (default: model.path)");
    cmd->add_option("--data", o.data, "JSONL or JSON array, fields from data.* (default: data.eval_path)");
    cmd->add_option("--config", o.config, "YAML config (" + config_keys + ")")->check(CLI::ExistingFile);
    cmd->add_option("--problems", o.problems,
                    "At most this many problems, 0 for all (default " + std::to_string(o.problems) + ")");
    cmd->add_flag("--shuffle", o.shuffle, "Pick a random subset (seed rollout.seed), not the first ones");
    cmd->add_option("--out", o.out, "Output folder (default: " + o.out + ")");
    cmd->add_option("--template", o.chat_template, "Chat template: auto, qwen3, llama3, plain, custom");
    cmd->add_option("overrides", o.overrides, "Dotted overrides such as " + example);
  };
  auto* analyze_cmd = app.add_subcommand("analyze", "Analyses of a model's behaviour");
  analyze_cmd->require_subcommand(1);
  introspect::cli::AnalyzeGeometryOptions geo_opts;
  auto* geo_cmd = analyze_cmd->add_subcommand(
      "g2rl-geometry", "G2RL gradient geometry: pairwise cos(Phi) of k responses per problem (geometry.json)");
  add_analysis_options(geo_cmd, geo_opts, "data.*, rollout.*, reward.math.*", "rollout.temperature=0.8");
  geo_cmd->add_option("--k", geo_opts.k, "Responses per problem (default 8)");
  geo_cmd->add_option("--bins", geo_opts.bins, "Histogram bins over [-1, 1] (default 20)");
  introspect::cli::AnalyzeMasaGateOptions gate_opts;
  auto* gate_cmd = analyze_cmd->add_subcommand(
      "masa-gate", "MASA's predictive gate on unseen problems: precision and recall against zero variance (gate.json)");
  add_analysis_options(gate_cmd, gate_opts, "masa.*, data.*, rollout.*, reward.math.*", "masa.gate_sigma=0.05");

  CLI11_PARSE(app, argc, argv);
  introspect::log::init("info");

  if (check->parsed()) return config_check(check_file, check_overrides);
  if (docs->parsed()) return config_docs(docs_out);
  if (tokenize_cmd->parsed()) return tokenize(tokenizer_path, add_special, decode, skip_special);
  if (verify_cmd->parsed()) return introspect::cli::verify(verify_opts);
  if (train_cmd->parsed()) return introspect::cli::train(train_opts);
  if (eval_cmd->parsed()) return introspect::cli::eval(eval_opts);
  if (geo_cmd->parsed()) return introspect::cli::analyze_g2rl_geometry(geo_opts);
  if (gate_cmd->parsed()) return introspect::cli::analyze_masa_gate(gate_opts);
  if (generate_cmd->parsed()) {
    for (const auto& [key, value] : gen_flags)
      if (!value.empty()) gen.overrides.push_back(key + "=" + value);
    if (greedy) gen.overrides.push_back("rollout.temperature=0");
    // Without a config, one sample per prompt (as vLLM); rollout.n's default is the GRPO group size.
    if (gen.config.empty() && gen_flags["rollout.n"].empty()) gen.overrides.insert(gen.overrides.begin(), "rollout.n=1");
    return introspect::cli::generate(gen);
  }
  return 0;
}
