#include "introspect/io/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <vector>

namespace introspect::log {

void init(const std::string& level, const std::filesystem::path& file) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_level(spdlog::level::from_str(level));
  std::vector<spdlog::sink_ptr> sinks{console};
  if (!file.empty()) {
    if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
    auto to_file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file.string());
    to_file->set_level(spdlog::level::debug);
    sinks.push_back(to_file);
  }
  auto logger = std::make_shared<spdlog::logger>("introspect", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::trace);  // each sink filters for itself
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void write(Level level, std::string_view message) {
  static constexpr spdlog::level::level_enum kLevels[] = {spdlog::level::trace, spdlog::level::debug,
                                                          spdlog::level::info, spdlog::level::warn,
                                                          spdlog::level::err};
  spdlog::default_logger_raw()->log(kLevels[static_cast<int>(level)], "{}", message);
}

}  // namespace introspect::log
