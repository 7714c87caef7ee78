// The metrics log: one JSON object per line, flushed after every step so a killed run loses nothing.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

namespace introspect::io {

class MetricsWriter {
 public:
  // Appends to `path` (created with its folder when missing).
  explicit MetricsWriter(const std::filesystem::path& path);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Writes {"step": step, <name>: <value>, ...}; non-finite values are written as null.
  void write(int64_t step, const std::map<std::string, double>& metrics);

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace introspect::io
