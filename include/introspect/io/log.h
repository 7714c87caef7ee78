// Logging: spdlog to the console plus a full log file per run. spdlog stays inside log.cpp because the torch
// wheel ships its own fmt headers, which clash with the fmt that Debian's spdlog is built against; callers
// pass plain strings: log::info("loaded ", n, " tensors").
#pragma once

#include <filesystem>
#include <sstream>
#include <string>
#include <string_view>

namespace introspect::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError };

// Sets the process logger: stderr at `level` ("trace".."error"), and, when `file` is given, the same lines at
// debug level into that file (its folder is created).
void init(const std::string& level, const std::filesystem::path& file = {});
void write(Level level, std::string_view message);

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
template <class... Args> void debug(const Args&... a) { write(Level::kDebug, concat(a...)); }
template <class... Args> void info(const Args&... a) { write(Level::kInfo, concat(a...)); }
template <class... Args> void warn(const Args&... a) { write(Level::kWarn, concat(a...)); }
template <class... Args> void error(const Args&... a) { write(Level::kError, concat(a...)); }

}  // namespace introspect::log
