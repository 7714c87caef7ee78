#include "introspect/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace introspect::config {
namespace fs = std::filesystem;

std::string Range::describe() const {
  auto num = [](double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  const bool has_lo = lo != -std::numeric_limits<double>::infinity();
  const bool has_hi = hi != std::numeric_limits<double>::infinity();
  if (has_lo && has_hi) {
    return std::string(lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]");
  }
  if (has_lo) return (lo_open ? "> " : ">= ") + num(lo);
  if (has_hi) return (hi_open ? "< " : "<= ") + num(hi);
  return "any";
}

std::string ConfigIssue::to_string() const {
  std::string s = where.empty() ? "" : where + ": ";
  if (!key.empty()) s += key + ": ";
  return s + message;
}

static std::string join_issues(const std::vector<ConfigIssue>& issues) {
  std::string s = std::to_string(issues.size()) + " config error" + (issues.size() == 1 ? "" : "s") + ":";
  for (const auto& i : issues) s += "\n  " + i.to_string();
  return s;
}

ConfigError::ConfigError(std::vector<ConfigIssue> issues)
    : std::runtime_error(join_issues(issues)), issues_(std::move(issues)) {}

namespace {

std::string join_path(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

// Shortest text that reads back to the same double.
std::string format_double(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, end);
  // Keep a marker of floatness so YAML readers see a number that is clearly not an integer.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Key collection and did-you-mean.

class KeyCollector final : public ConfigVisitor {
 public:
  std::vector<std::string> keys;
  void field(std::string_view k, bool&, std::string_view) override { add(k); }
  void field(std::string_view k, int64_t&, std::string_view, Range) override { add(k); }
  void field(std::string_view k, double&, std::string_view, Range) override { add(k); }
  void field(std::string_view k, std::string&, std::string_view) override { add(k); }
  void field(std::string_view k, std::vector<int64_t>&, std::string_view, Range) override { add(k); }
  void field(std::string_view k, std::vector<std::string>&, std::string_view) override { add(k); }
  void choice(std::string_view k, std::string&, std::string_view, const std::vector<std::string_view>&) override {
    add(k);
  }
  void section(std::string_view k, std::string_view, const std::function<void(ConfigVisitor&)>& body) override {
    add(k);
    const std::string saved = prefix_;
    prefix_ = join_path(prefix_, k);
    body(*this);
    prefix_ = saved;
  }

 private:
  void add(std::string_view k) { keys.push_back(join_path(prefix_, k)); }
  std::string prefix_;
};

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string_view leaf_of(std::string_view path) {
  const auto dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

// The closest valid name, or "" when nothing is close. A key in the wrong section ("train.temperature")
// counts as close to the same leaf in another section ("rollout.temperature").
std::string closest(const std::string& bad, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_score = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    size_t score = edit_distance(bad, c);
    score = std::min(score, edit_distance(leaf_of(bad), leaf_of(c)) + 1);
    if (score < best_score) {
      best_score = score;
      best = c;
    }
  }
  const size_t limit = std::max<size_t>(2, leaf_of(bad).size() / 3);
  return best_score <= limit ? best : "";
}

// ---------------------------------------------------------------------------------------------------------
// Applying a YAML mapping onto the tree.

struct Source {
  std::string file;           // the YAML file, or empty for an override
  std::string override_text;  // "a.b=c" for an override
};

class YamlApplier final : public ConfigVisitor {
 public:
  YamlApplier(YAML::Node map, std::string prefix, const Source& source, std::vector<ConfigIssue>& issues,
               std::set<std::string> reserved = {})
      : map_(std::move(map)), prefix_(std::move(prefix)), source_(source), issues_(issues),
        visited_(std::move(reserved)) {}

  // Reports keys of the mapping that the schema did not visit.
  void report_unknown_keys() {
    for (auto it = map_.begin(); it != map_.end(); ++it) {
      const std::string key = it->first.Scalar();
      if (visited_.count(key)) continue;
      const std::string path = join_path(prefix_, key);
      std::string msg = "unknown key";
      if (const std::string hint = closest(path, all_keys()); !hint.empty()) msg += "; did you mean `" + hint + "`?";
      issues_.push_back({where(it->first), path, msg});
    }
  }

  void field(std::string_view key, bool& value, std::string_view) override {
    with_scalar(key, "a boolean (true or false)", [&](const std::string& s) {
      std::string l = s;
      std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
      if (l == "true" || l == "yes" || l == "on") return value = true, true;
      if (l == "false" || l == "no" || l == "off") return value = false, true;
      return false;
    });
  }

  void field(std::string_view key, int64_t& value, std::string_view, Range range) override {
    with_scalar(key, expected("an integer", range), [&](const std::string& s) {
      int64_t v = 0;
      if (!parse_int(s, v) || !range.contains(static_cast<double>(v))) return false;
      value = v;
      return true;
    });
  }

  void field(std::string_view key, double& value, std::string_view, Range range) override {
    with_scalar(key, expected("a number", range), [&](const std::string& s) {
      double v = 0;
      if (!parse_double(s, v) || !range.contains(v)) return false;
      value = v;
      return true;
    });
  }

  void field(std::string_view key, std::string& value, std::string_view) override {
    const YAML::Node* node = find(key);
    if (!node) return;
    if (node->IsNull()) {
      value.clear();
    } else if (node->IsScalar()) {
      value = node->Scalar();
    } else {
      type_error(key, *node, "a string");
    }
  }

  void field(std::string_view key, std::vector<int64_t>& value, std::string_view, Range range) override {
    with_sequence(key, expected("a list of integers", range), value, [&](const std::string& s, int64_t& out) {
      return parse_int(s, out) && range.contains(static_cast<double>(out));
    });
  }

  void field(std::string_view key, std::vector<std::string>& value, std::string_view) override {
    with_sequence(key, "a list of strings", value, [](const std::string& s, std::string& out) {
      out = s;
      return true;
    });
  }

  void choice(std::string_view key, std::string& value, std::string_view,
              const std::vector<std::string_view>& options) override {
    std::string list;
    std::vector<std::string> names;
    for (auto o : options) {
      list += (list.empty() ? "" : ", ") + std::string(o);
      names.emplace_back(o);
    }
    const YAML::Node* node = find(key);
    if (!node) return;
    if (!node->IsScalar()) return type_error(key, *node, "one of: " + list);
    const std::string& s = node->Scalar();
    if (std::find(names.begin(), names.end(), s) != names.end()) {
      value = s;
      return;
    }
    std::string msg = "'" + s + "' is not allowed; expected one of: " + list;
    if (const std::string hint = closest(s, names); !hint.empty()) msg += " (did you mean `" + hint + "`?)";
    issues_.push_back({where(*node), join_path(prefix_, key), msg});
  }

  void section(std::string_view key, std::string_view, const std::function<void(ConfigVisitor&)>& body) override {
    const YAML::Node* node = find(key);
    if (!node || node->IsNull()) return;
    if (!node->IsMap()) return type_error(key, *node, "a mapping of the section's keys");
    YamlApplier child(*node, join_path(prefix_, key), source_, issues_);
    body(child);
    child.report_unknown_keys();
  }

 private:
  // The value for `key`, marking it as known; null when the mapping does not set it.
  const YAML::Node* find(std::string_view key) {
    visited_.insert(std::string(key));
    for (auto it = map_.begin(); it != map_.end(); ++it) {
      if (it->first.Scalar() == key) {
        found_ = it->second;
        return &found_;
      }
    }
    return nullptr;
  }

  std::string where(const YAML::Node& node) const {
    if (!source_.file.empty()) {
      const YAML::Mark m = node.Mark();
      if (m.line < 0) return source_.file;
      return source_.file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
    }
    return "override '" + source_.override_text + "'";
  }

  static std::string expected(const std::string& type, Range range) {
    return range.unbounded() ? type : type + " in " + range.describe();
  }

  static std::string describe_value(const YAML::Node& node) {
    if (node.IsNull()) return "an empty value";
    if (node.IsMap()) return "a mapping";
    if (node.IsSequence()) return "a list";
    return "'" + node.Scalar() + "'";
  }

  void type_error(std::string_view key, const YAML::Node& node, const std::string& expect) {
    issues_.push_back({where(node), join_path(prefix_, key), "expected " + expect + ", got " + describe_value(node)});
  }

  template <class Parse>
  void with_scalar(std::string_view key, const std::string& expect, Parse parse) {
    const YAML::Node* node = find(key);
    if (!node) return;
    if (!node->IsScalar() || !parse(node->Scalar())) type_error(key, *node, expect);
  }

  template <class T, class Parse>
  void with_sequence(std::string_view key, const std::string& expect, std::vector<T>& value, Parse parse) {
    const YAML::Node* node = find(key);
    if (!node) return;
    if (node->IsNull()) return value.clear();
    if (!node->IsSequence()) return type_error(key, *node, expect);
    std::vector<T> out;
    for (const auto& item : *node) {
      T v{};
      if (!item.IsScalar() || !parse(item.Scalar(), v)) return type_error(key, item, expect);
      out.push_back(std::move(v));
    }
    value = std::move(out);
  }

  static bool parse_int(const std::string& s, int64_t& out) {
    const char* begin = s.data();
    if (!s.empty() && s[0] == '+') ++begin;
    auto [end, ec] = std::from_chars(begin, s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size() && begin != end;
  }

  static bool parse_double(const std::string& s, double& out) {
    if (s.empty()) return false;
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size() && std::isfinite(out);
  }

  YAML::Node map_;
  YAML::Node found_;
  std::string prefix_;
  const Source& source_;
  std::vector<ConfigIssue>& issues_;
  std::set<std::string> visited_;
};

void apply_root(Config& config, const YAML::Node& root, const Source& source, std::vector<ConfigIssue>& issues,
                bool allow_base) {
  if (!root || root.IsNull()) return;
  const std::string where = source.file.empty() ? "override '" + source.override_text + "'" : source.file;
  if (!root.IsMap()) {
    issues.push_back({where, "", "expected a mapping of sections at the top level"});
    return;
  }
  std::set<std::string> reserved;
  if (allow_base) reserved.insert("base");
  YamlApplier applier(root, "", source, issues, reserved);
  config.visit(applier);
  applier.report_unknown_keys();
}

YAML::Node parse_yaml(const std::string& text, const std::string& name, std::vector<ConfigIssue>& issues) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    issues.push_back({name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1), "",
                      "YAML syntax error: " + e.msg});
  }
  return {};
}

// Applies `file` after the chain of base files it inherits.
void apply_file(Config& config, const fs::path& file, std::vector<fs::path>& chain,
                std::vector<ConfigIssue>& issues) {
  const std::string name = file.string();
  std::ifstream in(file);
  if (!in) {
    issues.push_back({name, "", "cannot open the config file"});
    return;
  }
  std::stringstream text;
  text << in.rdbuf();
  const YAML::Node root = parse_yaml(text.str(), name, issues);
  if (!root || !root.IsMap()) {
    if (root && !root.IsNull()) issues.push_back({name, "", "expected a mapping of sections at the top level"});
    return;
  }
  if (const YAML::Node base = root["base"]) {
    const YAML::Mark m = base.Mark();
    const std::string where = name + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
    if (!base.IsScalar()) {
      issues.push_back({where, "base", "expected the path of a YAML file to inherit"});
    } else {
      fs::path base_path = base.Scalar();
      if (base_path.is_relative()) base_path = file.parent_path() / base_path;
      std::error_code ec;
      const fs::path canonical = fs::weakly_canonical(base_path, ec);
      if (std::find(chain.begin(), chain.end(), canonical) != chain.end()) {
        issues.push_back({where, "base", "inheritance cycle through " + base_path.string()});
      } else if (!fs::exists(base_path)) {
        issues.push_back({where, "base", "inherited file " + base_path.string() + " does not exist"});
      } else {
        chain.push_back(canonical);
        apply_file(config, base_path, chain, issues);
        chain.pop_back();
      }
    }
  }
  apply_root(config, root, Source{name, ""}, issues, /*allow_base=*/true);
}

void apply_overrides(Config& config, const std::vector<std::string>& overrides, std::vector<ConfigIssue>& issues) {
  for (const auto& text : overrides) {
    const Source source{"", text};
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      issues.push_back({"override '" + text + "'", "", "expected key=value, e.g. train.lr=1e-6"});
      continue;
    }
    const std::string path = text.substr(0, eq);
    YAML::Node value = parse_yaml(text.substr(eq + 1), "override '" + text + "'", issues);
    if (!value) continue;
    // Nest the value under the dotted path and apply it like a one-key YAML file.
    std::vector<std::string> parts;
    std::stringstream ss(path);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); }) ||
        path.back() == '.') {
      issues.push_back({"override '" + text + "'", path, "malformed key path"});
      continue;
    }
    YAML::Node node = value;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
      YAML::Node wrapper(YAML::NodeType::Map);
      wrapper[*it] = node;
      node = wrapper;
    }
    apply_root(config, node, source, issues, /*allow_base=*/false);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Output.

// A field's value as YAML text; shared by the emitter and the reference doc.
class ValueText final : public ConfigVisitor {
 public:
  explicit ValueText(YAML::Emitter& out) : out_(out) {}
  void field(std::string_view k, bool& v, std::string_view) override { key(k) << (v ? "true" : "false"); }
  void field(std::string_view k, int64_t& v, std::string_view, Range) override { key(k) << v; }
  void field(std::string_view k, double& v, std::string_view, Range) override { key(k) << format_double(v); }
  void field(std::string_view k, std::string& v, std::string_view) override { key(k) << YAML::DoubleQuoted << v; }
  void field(std::string_view k, std::vector<int64_t>& v, std::string_view, Range) override {
    key(k) << YAML::Flow << v;
  }
  void field(std::string_view k, std::vector<std::string>& v, std::string_view) override {
    key(k) << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : v) out_ << YAML::DoubleQuoted << s;
    out_ << YAML::EndSeq;
  }
  void choice(std::string_view k, std::string& v, std::string_view, const std::vector<std::string_view>&) override {
    key(k) << v;
  }
  void section(std::string_view k, std::string_view, const std::function<void(ConfigVisitor&)>& body) override {
    key(k) << YAML::BeginMap;
    body(*this);
    out_ << YAML::EndMap;
  }

 private:
  YAML::Emitter& key(std::string_view k) { return out_ << YAML::Key << std::string(k) << YAML::Value; }
  YAML::Emitter& out_;
};

class MarkdownWriter final : public ConfigVisitor {
 public:
  std::ostringstream md;
  void field(std::string_view k, bool& v, std::string_view doc) override {
    row(k, "boolean", v ? "true" : "false", "", doc);
  }
  void field(std::string_view k, int64_t& v, std::string_view doc, Range r) override {
    row(k, "integer", std::to_string(v), r.unbounded() ? "" : r.describe(), doc);
  }
  void field(std::string_view k, double& v, std::string_view doc, Range r) override {
    row(k, "number", format_double(v), r.unbounded() ? "" : r.describe(), doc);
  }
  void field(std::string_view k, std::string& v, std::string_view doc) override {
    row(k, "string", "\"" + v + "\"", "", doc);
  }
  void field(std::string_view k, std::vector<int64_t>& v, std::string_view doc, Range r) override {
    YAML::Emitter out;
    out << YAML::Flow << v;
    row(k, "list of integers", out.c_str(), r.unbounded() ? "" : "each " + r.describe(), doc);
  }
  void field(std::string_view k, std::vector<std::string>& v, std::string_view doc) override {
    YAML::Emitter out;
    out << YAML::Flow << v;
    row(k, "list of strings", out.c_str(), "", doc);
  }
  void choice(std::string_view k, std::string& v, std::string_view doc,
              const std::vector<std::string_view>& options) override {
    std::string allowed;
    for (auto o : options) allowed += (allowed.empty() ? "" : ", ") + ("`" + std::string(o) + "`");
    row(k, "choice", v, allowed, doc);
  }
  void section(std::string_view k, std::string_view doc, const std::function<void(ConfigVisitor&)>& body) override {
    const std::string saved = prefix_;
    prefix_ = join_path(prefix_, k);
    md << "\n## `" << prefix_ << "`\n\n" << doc << ".\n\n";
    md << "| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
    body(*this);
    prefix_ = saved;
  }

 private:
  void row(std::string_view k, std::string_view type, const std::string& def, const std::string& allowed,
           std::string_view doc) {
    md << "| `" << join_path(prefix_, k) << "` | " << type << " | `" << def << "` | " << allowed << " | " << doc
       << " |\n";
  }
  std::string prefix_;
};

void throw_if_any(std::vector<ConfigIssue>& issues) {
  if (!issues.empty()) throw ConfigError(std::move(issues));
}

}  // namespace

Config load(const fs::path& file, const std::vector<std::string>& overrides) {
  Config config;
  std::vector<ConfigIssue> issues;
  std::error_code ec;
  std::vector<fs::path> chain{fs::weakly_canonical(file, ec)};
  apply_file(config, file, chain, issues);
  apply_overrides(config, overrides, issues);
  throw_if_any(issues);
  return config;
}

Config from_overrides(const std::vector<std::string>& overrides) {
  Config config;
  apply_overrides(config, overrides);
  return config;
}

void apply_overrides(Config& config, const std::vector<std::string>& overrides) {
  std::vector<ConfigIssue> issues;
  apply_overrides(config, overrides, issues);
  throw_if_any(issues);
}

void apply_yaml_text(Config& config, const std::string& yaml_text, const std::string& source_name) {
  std::vector<ConfigIssue> issues;
  const YAML::Node root = parse_yaml(yaml_text, source_name, issues);
  if (issues.empty()) apply_root(config, root, Source{source_name, ""}, issues, /*allow_base=*/false);
  throw_if_any(issues);
}

std::string to_yaml(Config config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  ValueText writer(out);
  config.visit(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void save_yaml(const Config& config, const fs::path& path) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << to_yaml(config);
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

std::vector<std::string> all_keys() {
  static const std::vector<std::string> keys = [] {
    Config config;
    KeyCollector collector;
    config.visit(collector);
    return collector.keys;
  }();
  return keys;
}

std::string reference_markdown() {
  Config config;
  MarkdownWriter writer;
  config.visit(writer);
  return "# Configuration reference\n\n"
         "Generated from `include/introspect/config/schema.h` by `introspect config docs`; do not edit by hand.\n"
         "A YAML file sets any of these keys by section; `base: other.yaml` inherits another file (relative to the\n"
         "file that names it), and `key.path=value` on the command line overrides both.\n" +
         writer.md.str();
}

}  // namespace introspect::config
