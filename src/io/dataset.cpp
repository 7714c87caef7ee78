#include "introspect/io/dataset.h"

#include "introspect/config/schema.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

namespace introspect::io {
namespace {

using nlohmann::json;

// A field as text: strings as they are, numbers as JSON writes them (AMC answers are floats such as 27.0).
std::optional<std::string> field_text(const json& row, const std::string& field) {
  const auto it = row.find(field);
  if (it == row.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return std::nullopt;
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
  return s;
}

// Builds one problem from a row; throws std::invalid_argument with the reason.
Problem make_problem(const json& row, const DatasetOptions& o) {
  if (!row.is_object()) throw std::invalid_argument("expected a JSON object");
  const auto prompt = field_text(row, o.prompt_field);
  if (!prompt) throw std::invalid_argument("missing or non-text prompt field '" + o.prompt_field + "'");
  const auto raw_answer = field_text(row, o.answer_field);
  if (!raw_answer) throw std::invalid_argument("missing or non-text answer field '" + o.answer_field + "'");
  Problem p;
  p.prompt = replace_all(o.prompt_template, "{problem}", *prompt);
  if (o.answer_extract == "boxed") {
    const auto boxed = last_boxed(*raw_answer);
    if (!boxed) throw std::invalid_argument("no \\boxed{} answer in field '" + o.answer_field + "'");
    p.answer = trim(*boxed);
  } else if (o.answer_extract == "gsm8k") {
    const auto mark = raw_answer->rfind("####");
    if (mark == std::string::npos) throw std::invalid_argument("no '####' answer in field '" + o.answer_field + "'");
    p.answer = trim(raw_answer->substr(mark + 4));
  } else {
    p.answer = trim(*raw_answer);
  }
  if (p.answer.empty()) throw std::invalid_argument("empty answer in field '" + o.answer_field + "'");
  if (!o.response_field.empty()) {
    const auto target = field_text(row, o.response_field);
    if (!target) throw std::invalid_argument("missing or non-text response field '" + o.response_field + "'");
    p.target = *target;
  }
  p.row = row;
  return p;
}

}  // namespace

std::optional<std::string> last_boxed(std::string_view text) {
  size_t best = std::string_view::npos, best_len = 0;
  for (const std::string_view tag : {"\\boxed", "\\fbox"}) {
    const size_t pos = text.rfind(tag);
    if (pos != std::string_view::npos && (best == std::string_view::npos || pos > best)) {
      best = pos;
      best_len = tag.size();
    }
  }
  if (best == std::string_view::npos) return std::nullopt;
  size_t i = best + best_len;
  while (i < text.size() && text[i] == ' ') ++i;
  if (i >= text.size() || text[i] != '{') return std::nullopt;
  int depth = 0;
  for (size_t j = i; j < text.size(); ++j) {
    if (text[j] == '\\' && j + 1 < text.size()) {
      ++j;  // an escaped brace does not count
      continue;
    }
    if (text[j] == '{') ++depth;
    if (text[j] == '}' && --depth == 0) return std::string(text.substr(i + 1, j - i - 1));
  }
  return std::nullopt;  // unbalanced
}

Dataset Dataset::load(const std::filesystem::path& path, const DatasetOptions& o) {
  if (o.answer_extract != "none" && o.answer_extract != "boxed" && o.answer_extract != "gsm8k") {
    throw std::invalid_argument("unknown answer_extract '" + o.answer_extract + "' (none, boxed, gsm8k)");
  }
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open the dataset");
  Dataset d;
  auto add = [&](const json& row, const std::string& where) {
    try {
      d.problems.push_back(make_problem(row, o));
      d.problems.back().source = where;
    } catch (const std::invalid_argument& e) {
      if (!o.skip_malformed) throw std::runtime_error(where + ": " + e.what());
      ++d.skipped;
    }
  };
  // A JSON array if the first non-blank character is '[', else JSONL.
  char first = 0;
  while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
  }
  in.clear();
  in.seekg(0);
  if (first == '[') {
    json rows;
    try {
      rows = json::parse(in);
    } catch (const json::exception& e) {
      throw std::runtime_error(path.string() + ": not a valid JSON array: " + e.what());
    }
    for (size_t i = 0; i < rows.size(); ++i) add(rows[i], path.string() + ":#" + std::to_string(i));
  } else {
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = path.string() + ":" + std::to_string(n);
      json row;
      try {
        row = json::parse(line);
      } catch (const json::exception& e) {
        if (!o.skip_malformed) throw std::runtime_error(where + ": not valid JSON: " + e.what());
        ++d.skipped;
        continue;
      }
      add(row, where);
    }
  }
  if (d.problems.empty()) throw std::runtime_error(path.string() + ": the dataset has no usable rows");
  return d;
}

EpochSampler::EpochSampler(int64_t size, uint64_t seed, bool shuffle) : size_(size), seed_(seed), shuffle_(shuffle) {
  if (size < 1) throw std::invalid_argument("EpochSampler: empty dataset");
  build_order();
}

void EpochSampler::build_order() {
  order_.resize(size_);
  std::iota(order_.begin(), order_.end(), 0);
  if (shuffle_) {
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(cursor_.epoch));
    // Fisher–Yates with our own index draws: std::shuffle's use of the engine is implementation-defined.
    for (int64_t i = size_ - 1; i > 0; --i) std::swap(order_[i], order_[rng() % static_cast<uint64_t>(i + 1)]);
  }
}

std::vector<int64_t> EpochSampler::next(int64_t count) {
  std::vector<int64_t> out;
  out.reserve(count);
  while (static_cast<int64_t>(out.size()) < count) {
    if (cursor_.offset == size_) {
      ++cursor_.epoch;
      cursor_.offset = 0;
      build_order();
    }
    out.push_back(order_[cursor_.offset++]);
  }
  return out;
}

void EpochSampler::restore(const Cursor& c) {
  if (c.offset < 0 || c.offset > size_ || c.epoch < 0) throw std::invalid_argument("EpochSampler: bad cursor");
  cursor_ = c;
  build_order();
}

DatasetOptions dataset_options(const config::DataConfig& d) {
  DatasetOptions o;
  o.prompt_field = d.prompt_field;
  o.answer_field = d.answer_field;
  o.answer_extract = d.answer_extract;
  o.prompt_template = d.prompt_template;
  o.skip_malformed = d.skip_malformed;
  return o;
}

}  // namespace introspect::io
