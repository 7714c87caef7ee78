#include "introspect/io/metrics.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace introspect::io {

MetricsWriter::MetricsWriter(const std::filesystem::path& path) : path_(path) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) throw std::runtime_error("cannot open metrics file " + path.string() + ": " + std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(int64_t step, const std::map<std::string, double>& metrics) {
  nlohmann::ordered_json line;
  line["step"] = step;
  for (const auto& [name, value] : metrics) {
    line[name] = std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json(nullptr);
  }
  const std::string text = line.dump() + "\n";
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    throw std::runtime_error("cannot write metrics file " + path_.string() + ": " + std::strerror(errno));
  }
}

}  // namespace introspect::io
