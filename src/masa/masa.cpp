#include "introspect/masa/masa.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "../reward/regex.h"
#include "introspect/config/schema.h"

namespace introspect::masa {
namespace {

using nlohmann::json;

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

std::string strip(std::string_view s, std::string_view chars) {
  const size_t b = s.find_first_not_of(chars);
  if (b == std::string_view::npos) return "";
  return std::string(s.substr(b, s.find_last_not_of(chars) - b + 1));
}

// The official code's str -> list rule: split on "," (items stripped of blanks and brackets), else one item.
std::vector<std::string> notion_list_from_string(const std::string& s) {
  if (s.find(',') == std::string::npos) return {s};
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    out.push_back(strip(std::string_view(s).substr(start, comma - start), " \t\n\r[]"));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string text_inside_first_meta(std::string_view text) {
  const size_t open = text.find("<meta>");
  if (open == std::string_view::npos) return "";
  const size_t close = text.find("</meta>", open + 6);
  if (close == std::string_view::npos) return "";
  return std::string(text.substr(open + 6, close - open - 6));
}

// Top-level balanced {...} spans of `text`, skipping braces inside JSON strings.
std::vector<std::pair<size_t, size_t>> balanced_objects(std::string_view text) {
  std::vector<std::pair<size_t, size_t>> spans;
  int depth = 0;
  bool in_string = false, escaped = false;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (depth > 0 && in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"' && depth > 0) {
      in_string = true;
    } else if (c == '{') {
      if (depth++ == 0) start = i;
    } else if (c == '}' && depth > 0) {
      if (--depth == 0) spans.emplace_back(start, i + 1);
    }
  }
  return spans;
}

// A JSON number, or a string holding one, rounded to the nearest integer.
std::optional<int64_t> rounded_number(const json& v) {
  double x;
  if (v.is_number()) {
    x = v.get<double>();
  } else if (v.is_string()) {
    const auto s = strip(v.get<std::string>(), " \t\n");
    char* end = nullptr;
    x = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) return std::nullopt;
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(x) || std::fabs(x) > 1e15) return std::nullopt;
  return static_cast<int64_t>(std::llround(x));
}

MetaPrediction read_tolerant(const json& obj, const ParseOptions& o) {
  MetaPrediction p;
  p.parsed = true;
  if (obj.contains("math_notion")) {
    const auto& n = obj["math_notion"];
    if (n.is_string()) {
      p.notions = notion_list_from_string(n.get<std::string>());
    } else if (n.is_array()) {
      std::vector<std::string> list;
      for (const auto& item : n)
        if (item.is_string()) list.push_back(item.get<std::string>());
      p.notions = std::move(list);
    }
  }
  if (obj.contains("pass_rate"))
    if (const auto r = rounded_number(obj["pass_rate"])) {
      p.pass_rate = static_cast<double>(std::clamp<int64_t>(*r, 0, 8)) / 8.0;
      p.pass_rate_out_of_range = *r < 0 || *r > 8;
    }
  if (obj.contains("solution_length"))
    if (const auto l = rounded_number(obj["solution_length"])) p.length = std::clamp(*l, o.min_length, o.max_length);
  return p;
}

MetaPrediction parse_strict(std::string_view text) {
  static const reward::Regex object(R"((\{["']math_notion["']:[^\}]*\}))", PCRE2_DOTALL);
  static const reward::Regex unquoted_notion(R"(math_notion\s*:\s*(\[[^\]]*\]))");
  MetaPrediction p;
  const auto matches = object.find_all(text);
  if (!matches.empty()) {
    const json obj = json::parse(matches.back().group(text, 1), nullptr, /*allow_exceptions=*/false);
    if (obj.is_object()) {
      p.parsed = true;
      if (obj.contains("math_notion")) {
        const auto& n = obj["math_notion"];
        if (n.is_string()) {
          p.notions = notion_list_from_string(n.get<std::string>());
        } else if (n.is_array() && std::all_of(n.begin(), n.end(), [](const json& x) { return x.is_string(); })) {
          p.notions = n.get<std::vector<std::string>>();
        }
        // any other type makes the official scorer throw, which scores the notion 0: left missing here
      }
      const auto& r = obj.value("pass_rate", json());
      if (r.is_number_integer()) {
        p.pass_rate = static_cast<double>(r.get<int64_t>()) / 8.0;
        p.pass_rate_out_of_range = *p.pass_rate < 0.0 || *p.pass_rate > 1.0;
      }
      const auto& l = obj.value("solution_length", json());
      if (l.is_number_integer()) p.length = l.get<int64_t>();
      return p;
    }
  }
  // Fallback: math_notion with an unquoted key only; the official fallback never yields pass_rate or a length.
  const auto n = unquoted_notion.find_all(text);
  if (!n.empty()) {
    const json list = json::parse(n.front().group(text, 1), nullptr, false);
    if (list.is_array() && !list.empty() &&
        std::all_of(list.begin(), list.end(), [](const json& x) { return x.is_string(); }))
      p.notions = list.get<std::vector<std::string>>();
  }
  return p;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string meta_user_message(std::string_view prompt_template, std::string_view problem, int64_t min_length,
                              int64_t max_length) {
  std::string out(prompt_template);
  // {problem} last, so braces inside the problem text are never taken for placeholders.
  replace_all(out, "{min_length}", std::to_string(min_length));
  replace_all(out, "{max_length}", std::to_string(max_length));
  replace_all(out, "{problem}", problem);
  return out;
}

MetaPrediction parse_meta(std::string_view text, const ParseOptions& options) {
  MetaPrediction p;
  if (options.strict) {
    p = parse_strict(text);
  } else {
    const size_t close = text.rfind("</meta>");
    const std::string_view tail = close == std::string_view::npos ? text : text.substr(close + 7);
    const auto spans = balanced_objects(tail);
    for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
      const json obj = json::parse(tail.substr(it->first, it->second - it->first), nullptr, false);
      if (obj.is_object()) {
        p = read_tolerant(obj, options);
        break;
      }
    }
  }
  p.reasoning = text_inside_first_meta(text);
  return p;
}

std::string singularize(std::string notion) {
  std::string lower = notion;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ends_with(lower, "series")) return notion;
  if (ends_with(lower, "ies")) return notion.substr(0, notion.size() - 3) + (notion.back() == 'S' ? "Y" : "y");
  for (const char* suffix : {"ches", "shes", "xes", "zes", "oes"})
    if (ends_with(lower, suffix)) return notion.substr(0, notion.size() - 2);
  if (ends_with(lower, "s") && !ends_with(lower, "ss")) return notion.substr(0, notion.size() - 1);
  return notion;
}

double notion_score(const std::vector<std::string>& notions, std::string_view excluded,
                    const reward::SolutionEvidence& solutions) {
  std::map<std::string, int64_t> net;
  for (const auto& raw : notions) {
    const std::string n = singularize(raw);
    if (excluded.find(n) != std::string_view::npos) continue;  // also drops "" (found everywhere)
    auto& count = net[n];
    for (size_t i = 0; i < solutions.texts.size(); ++i)
      if (solutions.texts[i].find(n) != std::string::npos) count += solutions.correct[i] ? 1 : -1;
  }
  if (net.empty()) return 0.0;
  const auto positive = std::count_if(net.begin(), net.end(), [](const auto& kv) { return kv.second > 0; });
  return static_cast<double>(positive) / static_cast<double>(net.size());
}

MetaScore score_meta(const MetaPrediction& prediction, std::string_view excluded,
                     const reward::SolutionEvidence& solutions, const RewardOptions& options) {
  MetaScore s;
  const size_t n = solutions.correct.size();
  if (n == 0) return s;
  int64_t l_min = 0, l_max = 0, n_correct = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!solutions.correct[i]) continue;
    const int64_t len = solutions.lengths[i];
    l_min = n_correct ? std::min(l_min, len) : len;
    l_max = n_correct ? std::max(l_max, len) : len;
    ++n_correct;
  }
  const double p = static_cast<double>(n_correct) / static_cast<double>(n);
  if (prediction.pass_rate) s.difficulty = std::pow(options.difficulty_base, std::fabs(p - *prediction.pass_rate));
  if (prediction.length && n_correct > 0) {
    const int64_t l = *prediction.length;
    s.length = (options.strict_length ? (l_min < l && l < l_max) : (l_min <= l && l <= l_max)) ? 1.0 : 0.0;
  }
  if (prediction.notions) s.notion = notion_score(*prediction.notions, excluded, solutions);
  return s;
}

GateDecision gate(const std::vector<MetaPrediction>& predictions, const GateOptions& o) {
  // Unparseable predictions are never confident ones, nor (unless trusted) ones written outside 0..8: a "pass_rate"
  // of 45 that tolerant parsing clamps to 8 is noise, not a prediction of 8/8.
  std::vector<double> valid;
  for (const auto& p : predictions)
    if (p.pass_rate && (o.trust_out_of_range || !p.pass_rate_out_of_range)) valid.push_back(*p.pass_rate);
  GateDecision d;
  d.valid = static_cast<int64_t>(valid.size());
  if (d.valid == 0) return d;
  double sum = 0, sq = 0;
  for (double v : valid) sum += v, sq += v * v;
  d.mean = sum / static_cast<double>(d.valid);
  d.std = std::sqrt(std::max(0.0, sq / static_cast<double>(d.valid) - d.mean * d.mean));
  // Too few valid predictions never gate.
  const bool enough = static_cast<double>(d.valid) >= o.min_valid_frac * static_cast<double>(predictions.size());
  bool on_zero, on_one;
  if (o.rule == GateRule::kRounded) {
    const double bucket = std::round(8.0 * d.mean);
    on_zero = bucket <= 0.0, on_one = bucket >= 8.0;
  } else {  // every valid prediction exactly 0 or exactly 1 (an unclamped 9/8 is neither)
    on_zero = std::all_of(valid.begin(), valid.end(), [](double v) { return v == 0.0; });
    on_one = std::all_of(valid.begin(), valid.end(), [](double v) { return v == 1.0; });
  }
  d.gated = enough && d.std < o.sigma && (on_zero || on_one);
  d.predicted_solved = d.gated && on_one;
  return d;
}

GateOptions gate_options(const config::MasaConfig& config) {
  return {config.gate_sigma, config.gate_min_valid_frac,
          config.gate_rule == "literal" ? GateRule::kLiteral : GateRule::kRounded, config.gate_out_of_range};
}

void GateCheck::add(bool solved_side, bool zero_variance) {
  auto& record = solved_side ? solved : unsolved;
  record.push_back(zero_variance);
  while (static_cast<int64_t>(record.size()) > window) record.pop_front();
}

std::optional<double> GateCheck::precision(bool solved_side) const {
  const auto& record = solved_side ? solved : unsolved;
  if (record.empty()) return std::nullopt;
  return static_cast<double>(std::count(record.begin(), record.end(), true)) / static_cast<double>(record.size());
}

bool GateCheck::suspended(bool solved_side) const {
  const auto& record = solved_side ? solved : unsolved;
  const auto judged_from = std::max<int64_t>(1, window / 4);
  return min_precision > 0 && static_cast<int64_t>(record.size()) >= judged_from &&
         *precision(solved_side) < min_precision;
}

int64_t cutoff_tokens(const std::vector<MetaPrediction>& predictions, double scale, int64_t min_tokens,
                      int64_t max_tokens) {
  double sum = 0;
  int64_t valid = 0;
  for (const auto& p : predictions)
    if (p.length) sum += static_cast<double>(*p.length), ++valid;
  if (valid == 0 || scale <= 0) return max_tokens;
  const auto cap = static_cast<int64_t>(std::ceil(scale * sum / static_cast<double>(valid)));
  return std::clamp(cap, std::min(min_tokens, max_tokens), max_tokens);
}

std::string with_notion_hint(std::string_view problem, const std::vector<std::string>& notions) {
  if (notions.empty()) return std::string(problem);
  std::string list;
  for (const auto& n : notions) list += (list.empty() ? "" : ", ") + n;
  return std::string(problem) + " The problem could be solved using following math notions: " + list + ".";
}

std::optional<std::string> expert_target(const MetaPrediction& prediction, const reward::SolutionEvidence& solutions,
                                         bool midpoint_length,
                                         std::optional<std::pair<int64_t, int64_t>> unsolved_length_range) {
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < solutions.correct.size(); ++i)
    if (solutions.correct[i]) lengths.push_back(solutions.lengths[i]);
  if (solutions.correct.empty() || (lengths.empty() && !(unsolved_length_range && prediction.length))) return std::nullopt;
  std::sort(lengths.begin(), lengths.end());
  const size_t m = lengths.size();
  const int64_t length = m == 0 ? std::clamp(*prediction.length, unsolved_length_range->first,
                                             std::max(unsolved_length_range->first, unsolved_length_range->second))
                         : midpoint_length ? (lengths.front() + lengths.back() + 1) / 2
                         : m % 2           ? lengths[m / 2]
                                           : (lengths[m / 2 - 1] + lengths[m / 2] + 1) / 2;
  const double p = static_cast<double>(m) / static_cast<double>(solutions.correct.size());
  // nlohmann orders keys alphabetically, which is the prompt's order and the strict parser's expected form.
  const json facts{{"math_notion", prediction.notions.value_or(std::vector<std::string>{})},
                   {"pass_rate", static_cast<int64_t>(std::llround(8.0 * p))},
                   {"solution_length", length}};
  return "<meta>" + prediction.reasoning + "</meta>\n" + facts.dump();
}

ParseOptions parse_options(const config::MasaConfig& config, int64_t max_length) {
  return {config.strict_parse, config.min_solution_length, max_length};
}

MetaRewardModule::MetaRewardModule(const config::MasaConfig& config, int64_t max_length)
    : parse_(parse_options(config, max_length)),
      reward_{config.difficulty_base, config.length_bounds == "strict"},
      exclude_meta_prompt_(config.notion_exclude == "meta_prompt") {}

reward::Scores MetaRewardModule::score(const std::vector<reward::Group>& groups) {
  reward::Scores s;
  double n = 0, parsed = 0, has_pass = 0, out_of_range = 0, has_len = 0, has_notion = 0;
  double diff = 0, len = 0, notion = 0, abs_err = 0, pred_pass = 0, true_pass = 0, pred_len = 0;
  double true_len = 0, true_len_n = 0;
  for (const auto& g : groups) {
    if (!g.solutions)
      throw std::invalid_argument("masa: a meta group has no solution rollouts to be judged against");
    const auto& sol = *g.solutions;
    if (sol.texts.size() != sol.correct.size() || sol.lengths.size() != sol.correct.size())
      throw std::invalid_argument("masa: solution evidence has mismatched texts, lengths and verdicts");
    const std::string_view excluded = exclude_meta_prompt_ ? std::string_view(g.prompt) : std::string_view(sol.problem);
    double p = 0;
    for (size_t i = 0; i < sol.correct.size(); ++i) {
      p += sol.correct[i];
      if (sol.correct[i]) true_len += static_cast<double>(sol.lengths[i]), ++true_len_n;
    }
    p = sol.correct.empty() ? 0.0 : p / static_cast<double>(sol.correct.size());
    auto& row = s.rewards.emplace_back();
    for (const auto& r : g.responses) {
      const auto pred = parse_meta(r.text, parse_);
      const auto m = score_meta(pred, excluded, sol, reward_);
      row.push_back(m.total());
      ++n;
      parsed += pred.parsed, has_pass += pred.pass_rate.has_value(), has_len += pred.length.has_value();
      out_of_range += pred.pass_rate_out_of_range;
      has_notion += pred.notions.has_value();
      diff += m.difficulty, len += m.length, notion += m.notion;
      true_pass += p;
      if (pred.pass_rate) abs_err += std::fabs(p - *pred.pass_rate), pred_pass += *pred.pass_rate;
      if (pred.length) pred_len += static_cast<double>(*pred.length);
    }
  }
  const double N = std::max(1.0, n);
  s.metrics["difficulty"] = diff / N;
  s.metrics["length"] = len / N;
  s.metrics["notion"] = notion / N;
  s.metrics["parse_fail_rate"] = 1.0 - parsed / N;
  s.metrics["valid_pass_rate"] = has_pass / N;
  s.metrics["pass_rate_out_of_range"] = out_of_range / N;  // the gate ignores these unless gate_out_of_range
  s.metrics["valid_length"] = has_len / N;
  s.metrics["valid_notion"] = has_notion / N;
  s.metrics["true_pass_rate"] = true_pass / N;
  if (has_pass > 0) s.metrics["abs_pass_error"] = abs_err / has_pass, s.metrics["pred_pass_rate"] = pred_pass / has_pass;
  if (has_len > 0) s.metrics["pred_length"] = pred_len / has_len;
  if (true_len_n > 0) s.metrics["true_correct_length"] = true_len / true_len_n;
  return s;
}

}  // namespace introspect::masa
