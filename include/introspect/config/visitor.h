// The reflection interface of the config tree. Each config struct lists its fields once, in a
// `visit(ConfigVisitor&)` method, with the field's key, doc line and valid range; the YAML loader, the
// CLI overrides, the YAML emitter and the reference doc are all visitors over that one list.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace introspect::config {

// A closed or open numeric interval; the default admits every value.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false;
  bool hi_open = false;

  static Range closed(double lo, double hi) { return {lo, hi, false, false}; }
  static Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
  static Range above(double lo) { return {lo, std::numeric_limits<double>::infinity(), true, false}; }
  static Range unit() { return closed(0.0, 1.0); }

  bool contains(double v) const {
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  bool unbounded() const {
    return lo == -std::numeric_limits<double>::infinity() && hi == std::numeric_limits<double>::infinity();
  }
  std::string describe() const;  // e.g. "[0, 1]", "> 1", ">= 0"
};

class ConfigVisitor {
 public:
  virtual ~ConfigVisitor() = default;
  virtual void field(std::string_view key, bool& value, std::string_view doc) = 0;
  virtual void field(std::string_view key, int64_t& value, std::string_view doc, Range range = {}) = 0;
  virtual void field(std::string_view key, double& value, std::string_view doc, Range range = {}) = 0;
  virtual void field(std::string_view key, std::string& value, std::string_view doc) = 0;
  virtual void field(std::string_view key, std::vector<int64_t>& value, std::string_view doc, Range range = {}) = 0;
  virtual void field(std::string_view key, std::vector<std::string>& value, std::string_view doc) = 0;
  // A string restricted to a fixed set of names.
  virtual void choice(std::string_view key, std::string& value, std::string_view doc,
                      const std::vector<std::string_view>& options) = 0;
  // A nested mapping; `body` visits its fields.
  virtual void section(std::string_view key, std::string_view doc, const std::function<void(ConfigVisitor&)>& body) = 0;

  // Sections call this with their own visit method.
  template <class Section>
  void section(std::string_view key, std::string_view doc, Section& s) {
    section(key, doc, [&s](ConfigVisitor& v) { s.visit(v); });
  }
};

}  // namespace introspect::config
