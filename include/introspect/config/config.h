// Loading, overriding, printing and documenting the config tree of schema.h.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "introspect/config/schema.h"

namespace introspect::config {

// One problem found while loading: where it is (file:line:col, or the override text), the full key path,
// and what is wrong.
struct ConfigIssue {
  std::string where;
  std::string key;
  std::string message;
  std::string to_string() const;
};

// Every problem found in one load, reported together so a user fixes them in one pass.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<ConfigIssue> issues);
  const std::vector<ConfigIssue>& issues() const { return issues_; }

 private:
  std::vector<ConfigIssue> issues_;
};

// The defaults, then `file` (after the chain of `base:` files it inherits, each relative to the file that
// names it), then the dotted overrides ("train.lr=1e-6", values parsed as YAML). Throws ConfigError.
Config load(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});
// The defaults with overrides applied.
Config from_overrides(const std::vector<std::string>& overrides);
// Applies dotted overrides to an existing tree. Throws ConfigError.
void apply_overrides(Config& config, const std::vector<std::string>& overrides);
// Applies one YAML document to `config`; `source_name` names it in errors. Throws ConfigError.
void apply_yaml_text(Config& config, const std::string& yaml_text, const std::string& source_name);

// The resolved tree as YAML that load() reads back to the same values.
std::string to_yaml(Config config);
// Writes to_yaml to `path` atomically (temporary file, then rename).
void save_yaml(const Config& config, const std::filesystem::path& path);

// Every key path of the schema, sections included ("rollout", "rollout.temperature", ...).
std::vector<std::string> all_keys();
// docs/config.md: every key with its type, default, allowed values and doc.
std::string reference_markdown();

}  // namespace introspect::config
