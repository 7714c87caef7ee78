// Small helpers shared by the tests: scratch folders, files and running the CLI.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "introspect/io/safetensors.h"

namespace introspect::testing {

// A fresh folder under the system temp dir, removed when the object dies.
class ScratchDir {
 public:
  ScratchDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("introspect-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path write(const std::string& name, const std::string& text) const {
    const auto p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p;
  }

 private:
  std::filesystem::path path_;
};

// One JSON value per line (metrics.jsonl, problems.jsonl, ...).
inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its combined output and exit code.
inline CommandResult run_command(const std::string& command) {
  CommandResult r{-1, ""};
  std::FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The largest |a - b| over the F32 tensors two model.safetensors files share, and how many they share.
struct WeightDiff {
  double max_abs = 0;
  size_t tensors = 0;
};
inline WeightDiff weight_difference(const std::filesystem::path& a, const std::filesystem::path& b) {
  const io::SafetensorsFile fa(a), fb(b);
  WeightDiff d;
  for (const auto& t : fa.header().tensors) {
    const auto* u = fb.header().find(t.name);
    if (!u || t.dtype != io::DType::kF32 || u->dtype != io::DType::kF32 || u->numel() != t.numel()) continue;
    const auto* x = reinterpret_cast<const float*>(fa.bytes(t));
    const auto* y = reinterpret_cast<const float*>(fb.bytes(*u));
    for (uint64_t i = 0; i < t.numel(); ++i) d.max_abs = std::max(d.max_abs, static_cast<double>(std::abs(x[i] - y[i])));
    ++d.tensors;
  }
  return d;
}

}  // namespace introspect::testing
