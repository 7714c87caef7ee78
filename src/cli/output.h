// Output helpers shared by the subcommands that write result files (eval, analyze).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace introspect::cli {

// Writes `text` to `path` through a temporary file and a rename, so a reader never sees half a file.
void write_atomic(const std::filesystem::path& path, const std::string& text);
// JSON text with invalid UTF-8 replaced rather than thrown on (model output can hold anything).
std::string dump(const nlohmann::ordered_json& j, int indent = -1);

}  // namespace introspect::cli
