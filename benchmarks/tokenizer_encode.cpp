// Single-thread encode throughput of our tokenizers. Reads a JSON array of strings, encodes it once to warm the
// BPE cache (HF tokenizers keeps one too), then times PASSES passes. Prints one JSON line.
//   bench_tokenizer_encode TOKENIZER CORPUS.json PASSES
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "introspect/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: bench_tokenizer_encode TOKENIZER CORPUS.json PASSES\n");
    return 2;
  }
  const auto tok = introspect::tokenizer::Tokenizer::load(argv[1]);
  std::ifstream in(argv[2]);
  const auto texts = nlohmann::json::parse(in).get<std::vector<std::string>>();
  const int passes = std::stoi(argv[3]);
  size_t tokens = 0, bytes = 0;
  for (const auto& t : texts) tokens += tok->encode(t).size(), bytes += t.size();
  const auto t0 = std::chrono::steady_clock::now();
  size_t check = 0;
  for (int p = 0; p < passes; ++p)
    for (const auto& t : texts) check += tok->encode(t).size();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"tokens\": %zu, \"bytes\": %zu, \"seconds\": %.4f, \"tokens_per_s\": %.0f}\n", tokens * passes,
              bytes * passes, s, check / s);
  return 0;
}
