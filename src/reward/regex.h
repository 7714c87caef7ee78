// A compiled PCRE2 pattern with Python finditer semantics, for the verifier and MASA's strict meta parser.
// Internal to introspect_base (which links PCRE2).
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace introspect::reward {

// A compiled PCRE2 pattern, shared by all threads (match data is per call).
class Regex {
 public:
  explicit Regex(const char* pattern, uint32_t flags = 0) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, flags | PCRE2_UTF, &err,
                          &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::logic_error(std::string("regex: ") + reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  struct Match {
    size_t start = 0, end = 0;
    std::vector<std::pair<size_t, size_t>> groups;  // [start, end) per group, npos when unset
    std::string group(std::string_view text, int g) const {
      const auto [b, e] = groups[static_cast<size_t>(g)];
      return b == std::string::npos ? std::string() : std::string(text.substr(b, e - b));
    }
  };

  // Non-overlapping matches, left to right (as Python's finditer).
  std::vector<Match> find_all(std::string_view text) const {
    std::vector<Match> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t offset = 0;
    while (offset <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), offset,
                                 offset == 0 ? 0 : PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      Match m;
      m.start = ov[0];
      m.end = ov[1];
      for (int g = 0; g < rc || g < static_cast<int>(pcre2_get_ovector_count(md)); ++g) {
        if (g < rc && ov[2 * g] != PCRE2_UNSET) {
          m.groups.emplace_back(ov[2 * g], ov[2 * g + 1]);
        } else {
          m.groups.emplace_back(std::string::npos, std::string::npos);
        }
      }
      out.push_back(std::move(m));
      offset = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
      // stay on a UTF-8 boundary
      while (offset < text.size() && (static_cast<unsigned char>(text[offset]) & 0xC0) == 0x80) ++offset;
    }
    pcre2_match_data_free(md);
    return out;
  }

  int group_number(const char* name) const {
    return pcre2_substring_number_from_name(code_, reinterpret_cast<PCRE2_SPTR>(name));
  }

 private:
  pcre2_code* code_ = nullptr;
};

}  // namespace introspect::reward
