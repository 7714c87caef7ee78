// Problem sets for RL and evaluation: JSONL files or JSON arrays of objects, with the prompt and answer fields
// mapped from the config, a prompt template, and answers that may live only inside a solution's \boxed{} or
// after GSM8K's "####". Arrow/Parquet files convert with one line of Python:
//   python -c "import pandas as p; p.read_parquet('x.parquet').to_json('x.jsonl', orient='records', lines=True)"
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace introspect::io {

struct Problem {
  std::string prompt;  // the prompt template applied to the prompt field
  std::string answer;  // the ground truth, extracted as configured
  std::string source;  // "file:line" (JSONL) or "file:#index" (JSON array), for messages
  std::string target;  // the response field (SFT), when one was asked for
  nlohmann::json row;  // the whole row, handed to reward modules as metadata
};

struct DatasetOptions {
  std::string prompt_field = "problem";
  std::string answer_field = "answer";
  std::string answer_extract = "none";  // none | boxed (last \boxed{} / \fbox{}) | gsm8k (text after "####")
  std::string prompt_template = "{problem}";  // {problem} is replaced by the prompt field
  bool skip_malformed = false;  // skip and count bad rows instead of failing on the first
  std::string response_field;   // when set, each row must have it (SFT targets)
};

}  // namespace introspect::io
namespace introspect::config {
struct DataConfig;
}
namespace introspect::io {

// The data.* keys as loading options (response_field left empty: only SFT asks for it).
DatasetOptions dataset_options(const config::DataConfig& data);

struct Dataset {
  std::vector<Problem> problems;
  int64_t skipped = 0;  // malformed rows skipped (only with skip_malformed)

  // Throws std::runtime_error naming the file, the line (or array index) and the field.
  static Dataset load(const std::filesystem::path& path, const DatasetOptions& options);
};

// The content of the last \boxed{...} or \fbox{...} in text, braces balanced; nullopt when there is none.
std::optional<std::string> last_boxed(std::string_view text);

// Visits a dataset epoch by epoch in a seeded order (a fresh shuffle per epoch, or file order). The cursor
// (epoch, offset) is all a checkpoint needs to resume the exact same sequence.
class EpochSampler {
 public:
  EpochSampler(int64_t size, uint64_t seed, bool shuffle);
  std::vector<int64_t> next(int64_t count);  // indices; crosses epoch boundaries as needed
  struct Cursor {
    int64_t epoch = 0, offset = 0;
  };
  Cursor cursor() const { return cursor_; }
  void restore(const Cursor& c);

 private:
  void build_order();
  int64_t size_;
  uint64_t seed_;
  bool shuffle_;
  Cursor cursor_;
  std::vector<int64_t> order_;
};

}  // namespace introspect::io
