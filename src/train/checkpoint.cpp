#include "introspect/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <regex>
#include <string>
#include <system_error>
#include <vector>

namespace introspect::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDone = "DONE";
constexpr const char* kTmpPrefix = ".tmp_step_";

std::optional<int64_t> step_of(const fs::path& dir) {
  static const std::regex pattern(R"(step_(\d+))");
  std::smatch m;
  const std::string name = dir.filename().string();
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::stoll(m[1]);
}

std::vector<CheckpointRef> complete_checkpoints(const fs::path& root) {
  std::vector<CheckpointRef> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const auto step = step_of(e.path());
    if (step && e.is_directory() && fs::exists(e.path() / kDone)) out.push_back({*step, e.path()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

}  // namespace

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::system_error(err, std::generic_category(), "fsync " + path.string());
}

fs::path write_checkpoint(const fs::path& root, int64_t step,
                          const std::function<void(const fs::path&)>& fill) {
  fs::create_directories(root);
  const fs::path tmp = root / (kTmpPrefix + std::to_string(step));
  const fs::path final_dir = root / ("step_" + std::to_string(step));
  try {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    fill(tmp);
    for (const auto& e : fs::recursive_directory_iterator(tmp)) fsync_path(e.path());
    fsync_path(tmp);
    fs::remove_all(final_dir);  // an incomplete folder of the same step from an earlier crash
    fs::rename(tmp, final_dir);
    fsync_path(root);
    {
      std::ofstream done(final_dir / kDone, std::ios::trunc);
      done << step << "\n";
      if (!done.flush()) throw std::runtime_error("cannot write " + (final_dir / kDone).string());
    }
    fsync_path(final_dir / kDone);
    fsync_path(final_dir);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    if (!fs::exists(final_dir / kDone, ignored)) fs::remove_all(final_dir, ignored);
    throw;
  }
  return final_dir;
}

std::optional<CheckpointRef> latest_checkpoint(const fs::path& root) {
  const auto all = complete_checkpoints(root);
  if (all.empty()) return std::nullopt;
  return all.back();
}

void prune_checkpoints(const fs::path& root, int64_t keep_last) {
  if (!fs::is_directory(root)) return;
  const auto all = complete_checkpoints(root);
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_all(all[i].dir);
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    const bool partial = name.rfind(kTmpPrefix, 0) == 0 || (step_of(e.path()) && !fs::exists(e.path() / kDone));
    if (partial) fs::remove_all(e.path());
  }
}

}  // namespace introspect::train
