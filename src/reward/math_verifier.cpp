// The math verifier: extraction, comparison of parsed answers, numeric evaluation (see math_verifier.h).
#include "introspect/reward/math_verifier.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "math_answer.h"
#include "math_symbolic.h"
#include "regex.h"

namespace introspect::reward {
namespace {

using math::Kind;
using math::Node;
using math::NodePtr;
using math::RelOp;
using Clock = std::chrono::steady_clock;

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

// ================================================================================================================
// Extraction.

// math-verify's plain-number and a/b-expression patterns (ExprExtractionConfig, without an anchor): a number
// after a blank, '=' or a currency sign, with thousands separators, a decimal point or comma, and a percent.
const Regex& number_regex() {
  static const Regex re(
      R"((?:^|\s|=)(?:\*\*)?[$€£¥₹₽₩]?(?<!\d))"
      R"((?:(?<integer1>-?[1-9]\d{0,2}(?:[ ,]\d{3})+)(?<decimal1>\.\d+)?|)"
      R"((?<integer2>-?\d+)(?<decimal2>[.,]\d+)|(?<decimal3>\.\d+)|(?<integer3>-?\d+)))"
      R"((?<percent>\s*(?:%|[Pp]ercent|\s*[Pp]ercentage|\s*[Pp]ct))?)");
  return re;
}

const Regex& expr_regex() {
  static const Regex re(
      R"((?:^|\s|=)(?:\*\*)?(?<expr>-?\(?-?\d[\d.\s+\-*×/^()÷]*[+\-*×/^()÷][\d.\s+\-*×/^()÷]+\)?))"
      R"((?:\*\*)?(?=\.|,|:|\s|\)|\$|$))");
  return re;
}

const Regex& latex_fraction_regex() {
  static const Regex re(R"(-?\\frac\{-?\d+(?:[.,]\d+)?\}\{-?\d+(?:[.,]\d+)?\})");
  return re;
}

const Regex& answer_is_regex() {
  static const Regex re(R"((?i)answer(?:\s*\*\*)?\s*(?:is\b\s*:?|:)(?:\s*\*\*)?\s*)");
  return re;
}

struct Candidate {
  std::string text;
  size_t end = 0;  // where it ends in the searched text: the later candidate wins
};

// The last plain number or numeric expression, normalised ("1,000.5" -> "1000.5", "28 percent" -> "28%").
std::optional<Candidate> last_number(std::string_view text) {
  std::optional<Candidate> best;
  auto consider = [&](Candidate c) {
    if (!best || c.end > best->end) best = std::move(c);
  };
  const Regex& num = number_regex();
  static const int g_int[3] = {num.group_number("integer1"), num.group_number("integer2"),
                               num.group_number("integer3")};
  static const int g_dec[3] = {num.group_number("decimal1"), num.group_number("decimal2"),
                               num.group_number("decimal3")};
  static const int g_pct = num.group_number("percent");
  for (const auto& m : num.find_all(text)) {
    std::string integer, decimal;
    for (int k = 0; k < 3; ++k) {
      if (integer.empty()) integer = m.group(text, g_int[k]);
      if (decimal.empty()) decimal = m.group(text, g_dec[k]);
    }
    std::string digits;
    for (char c : integer) {
      if (c != ',' && c != ' ') digits += c;
    }
    const bool negative = !digits.empty() && digits[0] == '-';
    if (negative) digits.erase(0, 1);
    const size_t nz = digits.find_first_not_of('0');
    digits = nz == std::string::npos ? "0" : digits.substr(nz);
    if (!decimal.empty()) decimal[0] = '.';
    std::string value = (negative ? "-" : "") + digits + decimal;
    if (!m.group(text, g_pct).empty()) value += "%";
    consider({value, m.end});
  }
  const Regex& ex = expr_regex();
  static const int g_expr = ex.group_number("expr");
  for (const auto& m : ex.find_all(text)) {
    std::string e = trim(m.group(text, g_expr));
    for (char& c : e) {
      if (c == '\n') c = ' ';
    }
    while (!e.empty() && e.back() == '.') e.pop_back();  // the sentence's full stop
    consider({e, m.end});
  }
  return best;
}

struct LatexEnv {
  size_t start, end;       // the whole environment with its delimiters
  std::string content;
};

// $...$ and \(...\) on one line, $$...$$ and \[...\] over several; escaped \$ is no delimiter, nor a $ right
// after a digit (currency: "1,000.99$").
std::vector<LatexEnv> latex_environments(std::string_view s) {
  std::vector<LatexEnv> envs;
  auto find_close = [&](size_t from, std::string_view close, bool one_line) -> size_t {
    for (size_t j = from; j + close.size() <= s.size(); ++j) {
      if (one_line && s[j] == '\n') return std::string_view::npos;
      if (s[j] == '\\' && close[0] == '$') {
        ++j;  // \$ inside
        continue;
      }
      if (s.compare(j, close.size(), close) == 0 && (j == 0 || s[j - 1] != '\\' || close[0] == '\\')) return j;
    }
    return std::string_view::npos;
  };
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char n = s[i + 1];
      if (n == '(' || n == '[') {
        const std::string_view close = n == '(' ? "\\)" : "\\]";
        const size_t j = find_close(i + 2, close, n == '(');
        if (j != std::string_view::npos && j > i + 2) {
          envs.push_back({i, j + 2, std::string(s.substr(i + 2, j - i - 2))});
          i = j + 2;
          continue;
        }
      }
      i += 2;
      continue;
    }
    if (s[i] == '$') {
      if (i + 1 < s.size() && s[i + 1] == '$') {
        const size_t j = find_close(i + 2, "$$", false);
        if (j != std::string_view::npos && j > i + 2) {
          envs.push_back({i, j + 2, std::string(s.substr(i + 2, j - i - 2))});
          i = j + 2;
          continue;
        }
        i += 2;
        continue;
      }
      if (i > 0 && is_digit(s[i - 1])) {
        ++i;
        continue;
      }
      const size_t j = find_close(i + 1, "$", true);
      if (j != std::string_view::npos && j > i + 1) {
        envs.push_back({i, j + 1, std::string(s.substr(i + 1, j - i - 1))});
        i = j + 1;
        continue;
      }
    }
    ++i;
  }
  return envs;
}

// A percent sign or word right after an environment belongs to its value: "$28$ %".
bool percent_follows(std::string_view s, size_t pos) {
  while (pos < s.size() && is_space(s[pos])) ++pos;
  const std::string_view rest = s.substr(pos);
  for (std::string_view p : {"\\%", "%", "percent", "Percent", "pct", "Pct"}) {
    if (rest.substr(0, p.size()) == p) return true;
  }
  return false;
}

// The last environment, with the ones before it joined by "and", "or" or "," ("$1$ and $2$, $3$").
std::optional<Candidate> last_latex(std::string_view s) {
  const auto envs = latex_environments(s);
  std::optional<Candidate> best;
  if (!envs.empty()) {
    size_t first = envs.size() - 1;
    for (int joined = 0; joined < 5 && first > 0; ++joined) {
      std::string between = trim(s.substr(envs[first - 1].end, envs[first].start - envs[first - 1].end));
      if (!between.empty() && between[0] == ',') between = trim(between.substr(1));
      if (!(between.empty() || between == "and" || between == "or")) break;
      --first;
    }
    std::string text;
    for (size_t k = first; k < envs.size(); ++k) {
      if (k > first) text += ", ";
      std::string content = trim(envs[k].content);
      if (percent_follows(s, envs[k].end)) content += "\\%";
      text += content;
    }
    best = Candidate{text, envs.back().end};
  }
  // a bare \frac{1}{2} outside any environment
  for (const auto& m : latex_fraction_regex().find_all(s)) {
    if (!best || m.end > best->end) best = Candidate{std::string(s.substr(m.start, m.end - m.start)), m.end};
  }
  return best;
}

std::optional<Candidate> last_math(std::string_view s, bool numbers) {
  auto latex = last_latex(s);
  if (!numbers) return latex;
  auto number = last_number(s);
  if (!latex) return number;
  if (!number) return latex;
  return number->end > latex->end ? number : latex;
}

// Prose: two words in a row outside math ("Jane started ... 3 hours ago").
bool is_prose(std::string_view s) {
  int words_in_row = 0;
  bool in_math = false;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '$') {
      in_math = !in_math;
      ++i;
      continue;
    }
    if (s[i] == '\\') {  // a command is not a word
      ++i;
      while (i < s.size() && is_letter(s[i])) ++i;
      words_in_row = 0;
      continue;
    }
    if (!in_math && is_letter(s[i])) {
      size_t e = i;
      while (e < s.size() && (is_letter(s[e]) || s[e] == '\'')) ++e;
      if (e - i >= 2) {
        if (++words_in_row >= 2) return true;
      } else {
        words_in_row = 0;
      }
      i = e;
      continue;
    }
    if (!is_space(s[i])) words_in_row = 0;
    ++i;
  }
  return false;
}

bool looks_like_math(std::string_view s) {
  if (s.empty()) return false;
  if (s.size() <= 3) return true;  // "B", "(C)"
  return std::any_of(s.begin(), s.end(), [](char c) {
    return is_digit(c) || c == '\\' || c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '=' ||
           c == '(' || c == '[' || c == '{' || c == '_';
  });
}

// "the answer is x", "Final Answer: x", "**Answer:** x": x up to the end of its sentence or line.
std::optional<Candidate> answer_is(std::string_view text, bool numbers) {
  const auto matches = answer_is_regex().find_all(text);
  for (size_t k = matches.size(); k-- > 0;) {
    const size_t from = matches[k].end;
    // the sentence: to the end of the line, or a full stop followed by a blank (not a decimal point)
    size_t end = text.find('\n', from);
    if (end == std::string_view::npos) end = text.size();
    // keep display math that spans lines
    if (text.substr(from, 2) == "$$" || text.substr(from, 2) == "\\[") {
      const auto envs = latex_environments(text.substr(from));
      if (!envs.empty() && envs[0].start == 0) end = std::max(end, from + envs[0].end);
    }
    bool in_math = false;
    for (size_t i = from; i < end; ++i) {
      if (text[i] == '$') in_math = !in_math;
      if (!in_math && text[i] == '.' && (i + 1 >= end || is_space(text[i + 1]))) {
        end = i;
        break;
      }
    }
    std::string segment = trim(text.substr(from, end - from));
    for (std::string_view q : {"\"", "**", "'"}) {
      if (segment.size() >= 2 * q.size() && segment.substr(0, q.size()) == q &&
          segment.substr(segment.size() - q.size()) == q) {
        segment = trim(std::string_view(segment).substr(q.size(), segment.size() - 2 * q.size()));
      }
    }
    if (segment.empty()) continue;
    const bool has_env = !latex_environments(segment).empty();
    if (has_env || is_prose(segment)) {
      auto inner = last_math(segment, numbers);
      if (inner) return Candidate{inner->text, from + end - from};
      continue;
    }
    if (looks_like_math(segment)) return Candidate{segment, end};
  }
  return std::nullopt;
}

std::optional<Candidate> boxed(std::string_view text) {
  const size_t b = text.rfind("\\boxed"), f = text.rfind("\\fbox");
  if (b == std::string_view::npos && f == std::string_view::npos) return std::nullopt;
  std::string content = math::boxed_content(text);
  if (content.empty()) return std::nullopt;
  // it ends at the brace closing the last box
  size_t end = b == std::string_view::npos ? f : f == std::string_view::npos ? b : std::max(b, f);
  size_t open = text.find('{', end);
  if (open != std::string_view::npos) {
    int depth = 0;
    for (size_t i = open; i < text.size(); ++i) {
      if (text[i] == '{') ++depth;
      if (text[i] == '}' && --depth == 0) {
        end = i + 1;
        break;
      }
    }
  }
  return Candidate{content, end};
}

std::optional<Candidate> gsm8k(std::string_view text) {
  const size_t p = text.rfind("####");
  if (p == std::string_view::npos) return std::nullopt;
  size_t end = text.find('\n', p);
  if (end == std::string_view::npos) end = text.size();
  std::string value = trim(text.substr(p + 4, end - p - 4));
  while (!value.empty() && value.back() == '.') value.pop_back();
  if (value.empty()) return std::nullopt;
  return Candidate{value, end};
}

std::string_view strip_think(std::string_view text) {
  if (const size_t close = text.rfind("</think>"); close != std::string_view::npos) text = text.substr(close + 8);
  if (const size_t open = text.find("<think>"); open != std::string_view::npos) text = text.substr(0, open);
  return text;
}

// ================================================================================================================
// Numeric evaluation of constant expressions: exact rationals while they fit in 128 bits, long double besides.

using i128 = __int128;

i128 gcd128(i128 a, i128 b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    const i128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

struct Rat {
  i128 n = 0, d = 1;
  bool operator==(const Rat& o) const { return n == o.n && d == o.d; }
};

std::optional<Rat> make_rat(i128 n, i128 d) {
  if (d == 0) return std::nullopt;
  if (d < 0) {
    if (n == std::numeric_limits<i128>::min() || d == std::numeric_limits<i128>::min()) return std::nullopt;
    n = -n;
    d = -d;
  }
  const i128 g = gcd128(n, d);
  if (g > 1) {
    n /= g;
    d /= g;
  }
  return Rat{n, d};
}

std::optional<i128> mul128(i128 a, i128 b) {
  i128 r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}
std::optional<i128> add128(i128 a, i128 b) {
  i128 r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::optional<Rat> rat_add(const Rat& a, const Rat& b) {
  const auto x = mul128(a.n, b.d), y = mul128(b.n, a.d), d = mul128(a.d, b.d);
  if (!x || !y || !d) return std::nullopt;
  const auto n = add128(*x, *y);
  if (!n) return std::nullopt;
  return make_rat(*n, *d);
}
std::optional<Rat> rat_mul(const Rat& a, const Rat& b) {
  const i128 g1 = gcd128(a.n, b.d), g2 = gcd128(b.n, a.d);
  const auto n = mul128(g1 ? a.n / g1 : a.n, g2 ? b.n / g2 : b.n);
  const auto d = mul128(g2 ? a.d / g2 : a.d, g1 ? b.d / g1 : b.d);
  if (!n || !d) return std::nullopt;
  return make_rat(*n, *d);
}
std::optional<Rat> rat_inv(const Rat& a) { return make_rat(a.d, a.n); }

long double rat_value(const Rat& r) { return static_cast<long double>(r.n) / static_cast<long double>(r.d); }

std::optional<i128> isqrt_exact(i128 v) {
  if (v < 0) return std::nullopt;
  auto r = static_cast<i128>(std::sqrt(static_cast<long double>(v)));
  for (i128 c = std::max<i128>(0, r - 2); c <= r + 2; ++c) {
    const auto square = mul128(c, c);
    if (square && *square == v) return c;
  }
  return std::nullopt;
}

enum class State { Value, Symbolic, Undefined, TooBig };

struct Value {
  State state = State::Value;
  long double v = 0;
  std::optional<Rat> q;       // exact, when it fits
  bool rational = true;       // only rational arithmetic: an exact value exists (GiNaC can compare past 128 bits)
};

Value with_variables() { return {State::Symbolic, 0, std::nullopt, false}; }
Value undefined() { return {State::Undefined, 0, std::nullopt, false}; }
Value too_big() { return {State::TooBig, 0, std::nullopt, false}; }
Value real(long double v) { return {State::Value, v, std::nullopt, false}; }
Value exact(const Rat& r) { return {State::Value, rat_value(r), r, true}; }

// The worst state of the parts: too big beats undefined beats symbolic; nullopt when all have values.
std::optional<Value> worst(const std::vector<Value>& parts) {
  for (State s : {State::TooBig, State::Undefined, State::Symbolic}) {
    for (const auto& p : parts) {
      if (p.state == s) return p;
    }
  }
  return std::nullopt;
}

constexpr double kMaxDigits = 20000;  // a constant with more digits than this is not compared

Value eval(const Node& n, int depth = 0);

Value eval_pow(const Value& b, const Value& e) {
  if (e.q && e.q->d == 1 && b.q) {
    const i128 k = e.q->n;
    const long double mag = std::abs(b.v);
    if (mag != 0 && mag != 1 && std::abs(static_cast<long double>(k)) * std::log10(mag) > kMaxDigits) return too_big();
    if (k < 0 && b.q->n == 0) return undefined();
    // exact by squaring while it fits
    std::optional<Rat> acc = Rat{1, 1};
    std::optional<Rat> base = k < 0 ? rat_inv(*b.q) : b.q;
    for (i128 m = k < 0 ? -k : k; m > 0 && acc && base; m >>= 1) {
      if (m & 1) acc = rat_mul(*acc, *base);
      if (m > 1) base = rat_mul(*base, *base);
    }
    if (acc && base) return exact(*acc);
    Value v = real(std::pow(b.v, static_cast<long double>(k)));
    v.rational = true;  // exact but beyond 128 bits
    return v;
  }
  if (b.v < 0) {
    // a real odd root of a negative number: (-8)^(1/3) = -2
    if (e.q && e.q->d % 2 == 1) {
      const long double r = std::pow(-b.v, e.v);
      return real(e.q->n % 2 == 0 ? r : -r);
    }
    return undefined();
  }
  if (b.v == 0 && e.v <= 0) return undefined();
  if (b.v != 0 && std::abs(e.v) * std::log10(b.v) > kMaxDigits) return too_big();
  if (e.q && b.q && e.q->d == 2) {  // exact square roots of perfect squares
    const auto rn = isqrt_exact(b.q->n), rd = isqrt_exact(b.q->d);
    if (rn && rd) return eval_pow(exact(Rat{*rn, *rd}), exact(Rat{e.q->n, 1}));
  }
  return real(std::pow(b.v, e.v));
}

Value eval_func(const Node& n, const std::vector<Value>& a) {
  const std::string& f = n.text;
  auto integer = [](const Value& v) -> std::optional<i128> {
    if (v.q && v.q->d == 1) return v.q->n;
    return std::nullopt;
  };
  if (f == "sqrt") return eval_pow(a[0], exact(Rat{1, 2}));
  if (f == "root") {
    const auto k = integer(a[1]);
    if (!k || *k == 0) return undefined();
    return eval_pow(a[0], exact(*make_rat(1, *k)));
  }
  if (f == "abs") {
    if (a[0].q) return exact(Rat{a[0].q->n < 0 ? -a[0].q->n : a[0].q->n, a[0].q->d});
    return real(std::abs(a[0].v));
  }
  if (f == "floor" || f == "ceil") {
    const long double r = f == "floor" ? std::floor(a[0].v) : std::ceil(a[0].v);
    if (a[0].q) {
      i128 q = a[0].q->n / a[0].q->d;  // toward zero
      if (f == "floor" && a[0].q->n < 0 && q * a[0].q->d != a[0].q->n) --q;
      if (f == "ceil" && a[0].q->n > 0 && q * a[0].q->d != a[0].q->n) ++q;
      return exact(Rat{q, 1});
    }
    return real(r);
  }
  if (f == "factorial") {
    const auto k = integer(a[0]);
    if (!k || *k < 0) return undefined();
    if (*k > 5000) return too_big();
    std::optional<Rat> acc = Rat{1, 1};
    for (i128 m = 2; m <= *k && acc; ++m) acc = rat_mul(*acc, Rat{m, 1});
    if (acc) return exact(*acc);
    Value v = real(std::exp(std::lgamma(static_cast<long double>(*k) + 1)));
    v.rational = true;
    return v;
  }
  if (f == "binom") {
    const auto nn = integer(a[0]), kk = integer(a[1]);
    if (!nn || !kk) return undefined();
    if (*kk < 0 || *kk > *nn) return exact(Rat{0, 1});
    if (*nn > 100000) return too_big();
    const i128 k = std::min(*kk, *nn - *kk);
    std::optional<Rat> acc = Rat{1, 1};
    for (i128 m = 1; m <= k && acc; ++m) {
      acc = rat_mul(*acc, Rat{*nn - k + m, 1});
      if (acc) acc = rat_mul(*acc, Rat{1, m});
    }
    if (acc) return exact(*acc);
    const auto lg = [](i128 x) { return std::lgamma(static_cast<long double>(x) + 1); };
    Value v = real(std::exp(lg(*nn) - lg(k) - lg(*nn - k)));
    v.rational = true;
    return v;
  }
  if (f == "gcd" || f == "lcm") {
    i128 acc = f == "gcd" ? 0 : 1;
    for (const auto& x : a) {
      const auto k = integer(x);
      if (!k) return undefined();
      if (f == "gcd") {
        acc = gcd128(acc, *k);
      } else {
        const i128 g = gcd128(acc, *k);
        const auto m = g ? mul128(acc / g, *k < 0 ? -*k : *k) : std::optional<i128>(0);
        if (!m) return undefined();
        acc = *m;
      }
    }
    return exact(Rat{acc, 1});
  }
  if (f == "max" || f == "min") {
    size_t best = 0;
    for (size_t k = 1; k < a.size(); ++k) {
      if ((f == "max") == (a[k].v > a[best].v)) best = k;
    }
    return a[best];
  }
  if (a.size() == 2 && f == "log") {
    if (a[0].v <= 0 || a[1].v <= 0 || a[1].v == 1) return undefined();
    return real(std::log(a[0].v) / std::log(a[1].v));
  }
  if (a.size() != 1) return undefined();
  const long double x = a[0].v;
  long double r;
  if (f == "sin") r = std::sin(x);
  else if (f == "cos") r = std::cos(x);
  else if (f == "tan") r = std::tan(x);
  else if (f == "sec") r = 1 / std::cos(x);
  else if (f == "csc") r = 1 / std::sin(x);
  else if (f == "cot") r = 1 / std::tan(x);
  else if (f == "asin") r = std::asin(x);
  else if (f == "acos") r = std::acos(x);
  else if (f == "atan") r = std::atan(x);
  else if (f == "sinh") r = std::sinh(x);
  else if (f == "cosh") r = std::cosh(x);
  else if (f == "tanh") r = std::tanh(x);
  else if (f == "exp") r = std::exp(x);
  else if (f == "log") r = x > 0 ? std::log(x) : std::numeric_limits<long double>::quiet_NaN();
  else if (f == "log10") r = x > 0 ? std::log10(x) : std::numeric_limits<long double>::quiet_NaN();
  else return with_variables();  // det, sgn, ...: not evaluated here, compared as they are
  if (!std::isfinite(r)) return undefined();
  return real(r);
}

Value eval(const Node& n, int depth) {
  if (depth > 200) return undefined();
  switch (n.kind) {
    case Kind::Number: {
      std::string digits;
      size_t frac = 0;
      const size_t dot = n.text.find('.');
      digits = dot == std::string::npos ? n.text : n.text.substr(0, dot) + n.text.substr(dot + 1);
      if (dot != std::string::npos) frac = n.text.size() - dot - 1;
      const long double v = std::strtold(n.text.c_str(), nullptr);
      if (digits.size() > 36 || frac > 36) {
        Value out = real(v);
        out.rational = true;
        return out;
      }
      i128 num = 0, den = 1;
      for (char c : digits) num = num * 10 + (c - '0');
      for (size_t k = 0; k < frac; ++k) den *= 10;
      return exact(*make_rat(num, den));
    }
    case Kind::Constant:
      if (n.text == "pi") return real(3.14159265358979323846264338327950288L);
      if (n.text == "e") return real(2.71828182845904523536028747135266250L);
      return real(std::numeric_limits<long double>::infinity());
    case Kind::Symbol:
    case Kind::Text:
    case Kind::Opaque:
      return with_variables();
    case Kind::Percent: {
      const Value x = eval(*n.kids[0], depth + 1);
      if (x.state != State::Value) return x;
      if (x.q) return exact(*rat_mul(*x.q, Rat{1, 100}));
      Value out = real(x.v / 100);
      out.rational = x.rational;
      return out;
    }
    case Kind::Neg: {
      Value x = eval(*n.kids[0], depth + 1);
      if (x.state != State::Value) return x;
      if (x.q) return exact(Rat{-x.q->n, x.q->d});
      x.v = -x.v;
      return x;
    }
    case Kind::Add:
    case Kind::Mul:
    case Kind::Div:
    case Kind::Pow:
    case Kind::Func: {
      std::vector<Value> parts;
      for (const auto& k : n.kids) parts.push_back(eval(*k, depth + 1));
      if (auto bad = worst(parts)) return *bad;
      if (n.kind == Kind::Pow) return eval_pow(parts[0], parts[1]);
      if (n.kind == Kind::Func) return eval_func(n, parts);
      bool rational = true;
      for (const auto& p : parts) rational = rational && p.rational;
      if (n.kind == Kind::Div) {
        if (parts[1].v == 0 && (!parts[1].q || parts[1].q->n == 0)) return undefined();
        if (parts[0].q && parts[1].q) {
          if (auto inv = rat_inv(*parts[1].q)) {
            if (auto r = rat_mul(*parts[0].q, *inv)) return exact(*r);
          }
        }
        Value out = real(parts[0].v / parts[1].v);
        out.rational = rational;
        return out;
      }
      std::optional<Rat> acc = n.kind == Kind::Add ? Rat{0, 1} : Rat{1, 1};
      long double v = n.kind == Kind::Add ? 0 : 1;
      for (const auto& p : parts) {
        v = n.kind == Kind::Add ? v + p.v : v * p.v;
        if (acc && p.q) {
          acc = n.kind == Kind::Add ? rat_add(*acc, *p.q) : rat_mul(*acc, *p.q);
        } else {
          acc.reset();
        }
      }
      if (acc) return exact(*acc);
      if (std::isnan(v)) return undefined();
      Value out = real(v);
      out.rational = rational;
      return out;
    }
    default:
      return undefined();
  }
}

bool float_atomic(const Node& n) {
  if (n.kind == Kind::Number) return n.is_float;
  if (n.kind == Kind::Neg || n.kind == Kind::Percent) return float_atomic(*n.kids[0]);
  return false;
}

// math-verify's float rounding: both sides rounded to `digits` decimals (half away from zero).
bool rounded_equal(const Value& a, const Value& b, int digits) {
  if (a.q && b.q && digits <= 30) {
    i128 scale = 1;
    for (int k = 0; k < digits; ++k) scale *= 10;
    auto rounded = [&](const Rat& r) -> std::optional<i128> {
      const auto n = mul128(r.n, scale);
      if (!n) return std::nullopt;
      const auto twice = mul128(*n, 2);
      if (!twice) return std::nullopt;
      // round(n / d) = floor((2n + d) / 2d) for n >= 0
      const i128 mag = *twice < 0 ? -*twice : *twice;
      const auto num = add128(mag, r.d);
      if (!num) return std::nullopt;
      const i128 q = *num / (2 * r.d);
      return *twice < 0 ? -q : q;
    };
    const auto x = rounded(*a.q), y = rounded(*b.q);
    if (x && y) return *x == *y;
  }
  const long double scale = std::pow(10.0L, digits);
  const long double x = a.v * scale, y = b.v * scale;
  if (std::abs(x) < 1e18L && std::abs(y) < 1e18L) return std::round(x) == std::round(y);
  return std::abs(a.v - b.v) <= 1e-15L * std::max(std::abs(a.v), std::abs(b.v));
}

// A decimal as written holds to half a unit in its last place: .0000673 is not .0000672 although both round to
// 0.000067 at six decimals (math-verify calls them equal); 0.333333 is 1/3. A relative 1e-9 allows float noise
// (0.30000000000000004).
bool within_written_precision(const Node& literal, const Value& own, const Value& other) {
  const Node* n = &literal;
  while (n->kind == Kind::Neg || n->kind == Kind::Percent) n = n->kids[0].get();
  if (n->kind != Kind::Number || !n->is_float) return true;
  const size_t dot = n->text.find('.');
  const int decimals = dot == std::string::npos ? 0 : static_cast<int>(n->text.size() - dot - 1);
  long double diff;
  if (own.q && other.q) {
    const auto d = rat_add(*own.q, Rat{-other.q->n, other.q->d});
    diff = d ? std::abs(rat_value(*d)) : std::abs(own.v - other.v);
  } else {
    diff = std::abs(own.v - other.v);
  }
  const long double half_unit = 0.5L * std::pow(10.0L, -decimals) * (1 + 1e-9L);
  return diff <= half_unit || diff <= 1e-9L * std::max(std::abs(own.v), std::abs(other.v));
}

// ================================================================================================================
// Comparison.

struct Context {
  Clock::time_point deadline;
  int rounding = 6;
  bool allow_set_relation = false;
  bool expired() const { return Clock::now() >= deadline; }
};

bool equal(NodePtr g, NodePtr p, Context& ctx, int depth = 0);

bool is_relation(const Node& n) { return n.kind == Kind::Relation; }
bool is_equation(const Node& n) {
  return n.kind == Kind::Relation &&
         std::all_of(n.ops.begin(), n.ops.end(), [](RelOp o) { return o == RelOp::Eq || o == RelOp::In; });
}
bool is_assignment(const Node& n) { return is_equation(n) && math::only_symbols(*n.kids[0]); }

NodePtr first_and_last(const NodePtr& rel) {
  if (rel->kids.size() == 2) return rel;
  auto out = std::make_shared<Node>(*rel);
  out->kids = {rel->kids.front(), rel->kids.back()};
  out->ops = {rel->ops.back()};
  return out;
}

bool is_collection(const Node& n) {
  return n.kind == Kind::Set || n.kind == Kind::List || n.kind == Kind::Tuple || n.kind == Kind::Interval ||
         n.kind == Kind::SetOp;
}
bool is_setlike(const Node& n) {
  return n.kind == Kind::Set || n.kind == Kind::List || n.kind == Kind::Interval || n.kind == Kind::SetOp ||
         (n.kind == Kind::Tuple && n.parens && n.kids.size() == 2);
}

bool contains_matrix(const Node& n) {
  if (n.kind == Kind::Matrix) return true;
  return std::any_of(n.kids.begin(), n.kids.end(), [](const NodePtr& k) { return contains_matrix(*k); });
}

NodePtr interval(NodePtr lo, NodePtr hi, bool left_closed, bool right_closed) {
  auto n = std::make_shared<Node>();
  n->kind = Kind::Interval;
  n->kids = {std::move(lo), std::move(hi)};
  n->left_closed = left_closed;
  n->right_closed = right_closed;
  return n;
}

RelOp flipped(RelOp op) {
  switch (op) {
    case RelOp::Lt: return RelOp::Gt;
    case RelOp::Gt: return RelOp::Lt;
    case RelOp::Le: return RelOp::Ge;
    case RelOp::Ge: return RelOp::Le;
    default: return op;
  }
}

// An inequality in one variable as the set it describes: "-2 <= x <= 7" is [-2, 7], "x > 3" is (3, oo),
// "1 <= |z| <= 3/2" is [-3/2, -1] U [1, 3/2].
NodePtr relation_as_set(const Node& rel) {
  std::vector<NodePtr> operands = rel.kids;
  std::vector<RelOp> ops = rel.ops;
  if (ops.size() == 1 && ops[0] == RelOp::Ne) {
    const bool var_left = math::has_free_parts(*operands[0]);
    const NodePtr& value = var_left ? operands[1] : operands[0];
    if (math::has_free_parts(*value)) return nullptr;
    const auto inf = math::make(Kind::Constant, {}, "inf");
    return math::make(Kind::SetOp, {interval(math::make(Kind::Neg, {inf}), value, false, false),
                                    interval(value, inf, false, false)},
                      "cup");
  }
  if (ops.empty() || ops.size() > 2) return nullptr;
  for (RelOp o : ops) {
    if (o != RelOp::Lt && o != RelOp::Le && o != RelOp::Gt && o != RelOp::Ge) return nullptr;
  }
  // all as < / <=
  if (ops[0] == RelOp::Gt || ops[0] == RelOp::Ge) {
    std::reverse(operands.begin(), operands.end());
    std::reverse(ops.begin(), ops.end());
    for (auto& o : ops) o = flipped(o);
  }
  for (RelOp o : ops) {
    if (o != RelOp::Lt && o != RelOp::Le) return nullptr;
  }
  int var = -1;
  for (size_t k = 0; k < operands.size(); ++k) {
    if (math::has_free_parts(*operands[k])) {
      if (var >= 0) return nullptr;
      var = static_cast<int>(k);
    }
  }
  if (var < 0) return nullptr;
  const auto inf = math::make(Kind::Constant, {}, "inf");
  NodePtr lo = math::make(Kind::Neg, {inf}), hi = inf;
  bool lo_closed = false, hi_closed = false;
  if (var > 0) {
    lo = operands[static_cast<size_t>(var) - 1];
    lo_closed = ops[static_cast<size_t>(var) - 1] == RelOp::Le;
  }
  if (static_cast<size_t>(var) + 1 < operands.size()) {
    hi = operands[static_cast<size_t>(var) + 1];
    hi_closed = ops[static_cast<size_t>(var)] == RelOp::Le;
  }
  const Node& v = *operands[static_cast<size_t>(var)];
  if (v.kind == Kind::Func && v.text == "abs" && var > 0) {
    const Value low = eval(*lo);
    if (low.state != State::Value || low.v < 0) return nullptr;
    if (low.v == 0) return interval(math::make(Kind::Neg, {hi}), hi, hi_closed, hi_closed);
    return math::make(Kind::SetOp,
                      {interval(math::make(Kind::Neg, {hi}), math::make(Kind::Neg, {lo}), hi_closed, lo_closed),
                       interval(lo, hi, lo_closed, hi_closed)},
                      "cup");
  }
  return interval(lo, hi, lo_closed, hi_closed);
}

// The symbolic check in a helper process, guarded: huge powers are refused here, and expand()/normal() only run
// when the expansion stays small.
double expansion_terms(const Node& n) {
  switch (n.kind) {
    case Kind::Add: {
      double t = 0;
      for (const auto& k : n.kids) t += expansion_terms(*k);
      return t;
    }
    case Kind::Mul: {
      double t = 1;
      for (const auto& k : n.kids) t *= expansion_terms(*k);
      return t;
    }
    case Kind::Neg:
    case Kind::Div:
      return expansion_terms(*n.kids[0]);
    case Kind::Pow: {
      const Value e = eval(*n.kids[1]);
      if (!math::has_free_parts(*n.kids[0]) || e.state != State::Value || !e.q || e.q->d != 1 || e.q->n < 0) return 1;
      const double base = expansion_terms(*n.kids[0]);
      const double k = static_cast<double>(e.q->n);
      // C(k + t - 1, t - 1) terms, in logs
      const double log_terms = std::lgamma(k + base) - std::lgamma(k + 1) - std::lgamma(base);
      return std::exp(std::min(log_terms, 60.0));
    }
    default:
      return 1;
  }
}

bool powers_in_range(const Node& n) {
  if (n.kind == Kind::Pow && math::has_free_parts(*n.kids[0])) {
    const Value e = eval(*n.kids[1]);
    if (e.state == State::Value && std::abs(e.v) > 1000) return false;
  }
  if (n.kind == Kind::Func && n.text == "factorial" && math::has_free_parts(n)) return true;
  return std::all_of(n.kids.begin(), n.kids.end(), [](const NodePtr& k) { return powers_in_range(*k); });
}

size_t node_count(const Node& n) {
  size_t c = 1;
  for (const auto& k : n.kids) c += node_count(*k);
  return c;
}

std::optional<int> symbolic(math::SymbolicOp op, const Node& a, const Node& b, Context& ctx) {
  if (ctx.expired()) return std::nullopt;
  // constants too big to write out, or powers of expressions too big to expand, are not compared
  for (const Node* n : {&a, &b}) {
    if (eval(*n).state == State::TooBig || !powers_in_range(*n) || node_count(*n) > 4000) return std::nullopt;
  }
  std::string ga, gb;
  try {
    ga = math::to_ginac(a);
    gb = math::to_ginac(b);
  } catch (const math::ParseError&) {
    return std::nullopt;
  }
  const bool expand = expansion_terms(a) + expansion_terms(b) <= 20000;
  return math::symbolic_query(op, ga, gb, expand, ctx.deadline);
}

NodePtr difference(const NodePtr& a, const NodePtr& b) {
  return math::make(Kind::Add, {a, math::make(Kind::Neg, {b})});
}

// The sign of a / b when it is a nonzero constant, else 0.
int ratio_sign(const NodePtr& a, const NodePtr& b, Context& ctx) {
  const Value x = eval(*a), y = eval(*b);
  if (x.state == State::Value && y.state == State::Value) {
    if (x.v == 0 && y.v == 0) return 1;  // "2 = 2" against "3 = 3"
    if (y.v == 0 || x.v == 0) return 0;
    return (x.v > 0) == (y.v > 0) ? 1 : -1;
  }
  if (x.state != State::Symbolic && x.state != State::Value) return 0;
  if (y.state != State::Symbolic && y.state != State::Value) return 0;
  return symbolic(math::SymbolicOp::Ratio, *a, *b, ctx).value_or(0);
}

bool scalar_operand(const Node& n) {
  return !is_collection(n) && n.kind != Kind::Relation && n.kind != Kind::Text && !contains_matrix(n);
}

// Two relations a op b: the same relation written again, flipped, or scaled (2x + 4y = 3 is y = -x/2 + 3/4;
// -x > -1 is x < 1).
bool binary_relations_equal(const NodePtr& gl, RelOp go, const NodePtr& gr, const NodePtr& pl, RelOp po,
                            const NodePtr& pr, Context& ctx, int depth) {
  if (go == po && equal(gl, pl, ctx, depth + 1) && equal(gr, pr, ctx, depth + 1)) return true;
  if (flipped(go) == po && equal(gl, pr, ctx, depth + 1) && equal(gr, pl, ctx, depth + 1)) return true;
  if (go == RelOp::In || po == RelOp::In) return false;
  for (const NodePtr& n : {gl, gr, pl, pr}) {
    if (!scalar_operand(*n)) return false;
  }
  const bool g_ineq = go != RelOp::Eq && go != RelOp::Ne;
  if (g_ineq != (po != RelOp::Eq && po != RelOp::Ne)) return false;
  if (!g_ineq && go != po) return false;
  if (g_ineq && go != po && flipped(go) != po) return false;
  const int sign = ratio_sign(difference(gl, gr), difference(pl, pr), ctx);
  if (sign == 0) return false;
  if (!g_ineq) return true;
  return go == po ? sign > 0 : sign < 0;
}

bool relations_equal(const Node& g, const Node& p, Context& ctx, int depth) {
  if (g.ops.size() != p.ops.size()) return false;
  for (size_t k = 0; k < g.ops.size(); ++k) {
    if (!binary_relations_equal(g.kids[k], g.ops[k], g.kids[k + 1], p.kids[k], p.ops[k], p.kids[k + 1], ctx, depth)) {
      return false;
    }
  }
  return true;
}

bool in_order(const std::vector<NodePtr>& a, const std::vector<NodePtr>& b, Context& ctx, int depth) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (!equal(a[k], b[k], ctx, depth + 1)) return false;
  }
  return true;
}

// Every element matched once, in any order; repeated elements count once (as in a set).
bool any_order(const std::vector<NodePtr>& a, const std::vector<NodePtr>& b, Context& ctx, int depth) {
  auto dedup = [](const std::vector<NodePtr>& v) {
    std::vector<NodePtr> out;
    std::vector<std::string> seen;
    for (const auto& n : v) {
      std::string c = math::canonical(*n);
      if (std::find(seen.begin(), seen.end(), c) != seen.end()) continue;
      seen.push_back(std::move(c));
      out.push_back(n);
    }
    return out;
  };
  const auto x = dedup(a), y = dedup(b);
  if (x.size() != y.size() || x.size() > 256) return false;
  std::vector<bool> used(y.size(), false);
  for (const auto& e : x) {
    bool found = false;
    for (size_t k = 0; k < y.size() && !found; ++k) {
      if (!used[k] && equal(e, y[k], ctx, depth + 1)) {
        used[k] = true;
        found = true;
      }
    }
    if (!found) return false;
  }
  return true;
}

bool holds_structures(const Node& list) {
  return std::any_of(list.kids.begin(), list.kids.end(), [](const NodePtr& k) {
    return is_collection(*k) || k->kind == Kind::Relation || k->kind == Kind::Matrix;
  });
}

bool collections_equal(const NodePtr& g, const NodePtr& p, Context& ctx, int depth) {
  const Kind gk = g->kind, pk = p->kind;
  auto as_two = [](const Node& n) {
    return (n.kind == Kind::Tuple && n.parens && n.kids.size() == 2) ||
           ((n.kind == Kind::List || n.kind == Kind::Set) && n.kids.size() == 2);
  };
  if (gk == Kind::Interval || pk == Kind::Interval) {
    if (gk == Kind::Interval && pk == Kind::Interval) {
      return g->left_closed == p->left_closed && g->right_closed == p->right_closed &&
             in_order(g->kids, p->kids, ctx, depth);
    }
    // (a, b) is both a pair and an open interval
    const Node& iv = gk == Kind::Interval ? *g : *p;
    const Node& other = gk == Kind::Interval ? *p : *g;
    if (iv.left_closed || iv.right_closed || !as_two(other)) return false;
    return gk == Kind::Interval ? in_order(g->kids, p->kids, ctx, depth) : in_order(g->kids, p->kids, ctx, depth);
  }
  if (gk == Kind::SetOp || pk == Kind::SetOp) {
    if (gk != pk || g->text != p->text) return false;
    return g->text == "minus" ? in_order(g->kids, p->kids, ctx, depth) : any_order(g->kids, p->kids, ctx, depth);
  }
  // a lone value against a collection: a one-element set
  if (!is_collection(*g) || !is_collection(*p)) {
    const NodePtr& coll = is_collection(*g) ? g : p;
    const NodePtr& single = is_collection(*g) ? p : g;
    if (coll->kind == Kind::Tuple || coll->kids.size() != 1) return false;
    return is_collection(*g) ? equal(coll->kids[0], single, ctx, depth + 1)
                             : equal(single, coll->kids[0], ctx, depth + 1);
  }
  if (gk == Kind::Tuple || pk == Kind::Tuple) return in_order(g->kids, p->kids, ctx, depth);  // in written order
  if (gk == Kind::Set || pk == Kind::Set) return any_order(g->kids, p->kids, ctx, depth);
  // two bare lists: values in order ("10, 4, -2" is not "4, 10, -2"), solutions (pairs, equations) in any order
  if (holds_structures(*g) || holds_structures(*p)) return any_order(g->kids, p->kids, ctx, depth);
  return in_order(g->kids, p->kids, ctx, depth);
}

// A word for text comparison: \text{odd}, the product o*d*d, the symbol E.
std::optional<std::string> word(const Node& n) {
  std::string out;
  switch (n.kind) {
    case Kind::Text: out = n.text; break;
    case Kind::Symbol: out = n.text; break;
    case Kind::Constant:
      if (n.text != "e") return std::nullopt;
      out = "e";
      break;
    case Kind::Mul:
      for (const auto& k : n.kids) {
        if (k->kind != Kind::Symbol && !(k->kind == Kind::Constant && k->text == "e")) return std::nullopt;
        out += k->text;
      }
      break;
    default: return std::nullopt;
  }
  std::string compact;
  for (char c : out) {
    if (!is_space(c)) compact += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return compact;
}

// A matrix expression (sums, products, scalar multiples of matrices) worked out cell by cell.
NodePtr matrix_value(const NodePtr& n, int depth = 0) {
  if (depth > 50) return nullptr;
  if (n->kind == Kind::Matrix) return n;
  auto make_matrix = [](int rows, int cols, std::vector<NodePtr> cells) {
    auto m = std::make_shared<Node>();
    m->kind = Kind::Matrix;
    m->rows = rows;
    m->cols = cols;
    m->kids = std::move(cells);
    return m;
  };
  if (n->kind == Kind::Neg) {
    NodePtr m = matrix_value(n->kids[0], depth + 1);
    if (!m) return nullptr;
    std::vector<NodePtr> cells;
    for (const auto& c : m->kids) cells.push_back(math::make(Kind::Neg, {c}));
    return make_matrix(m->rows, m->cols, cells);
  }
  if (n->kind == Kind::Add) {
    NodePtr acc;
    for (const auto& k : n->kids) {
      NodePtr m = matrix_value(k, depth + 1);
      if (!m) return nullptr;
      if (!acc) {
        acc = m;
        continue;
      }
      if (acc->rows != m->rows || acc->cols != m->cols) return nullptr;
      std::vector<NodePtr> cells;
      for (size_t c = 0; c < m->kids.size(); ++c) cells.push_back(math::make(Kind::Add, {acc->kids[c], m->kids[c]}));
      acc = make_matrix(m->rows, m->cols, cells);
    }
    return acc;
  }
  if (n->kind == Kind::Mul) {
    NodePtr acc;        // the matrix so far
    std::vector<NodePtr> scalars;
    for (const auto& k : n->kids) {
      if (!contains_matrix(*k)) {
        scalars.push_back(k);
        continue;
      }
      NodePtr m = matrix_value(k, depth + 1);
      if (!m) return nullptr;
      if (!acc) {
        acc = m;
        continue;
      }
      if (acc->cols != m->rows) return nullptr;
      std::vector<NodePtr> cells;
      for (int r = 0; r < acc->rows; ++r) {
        for (int c = 0; c < m->cols; ++c) {
          std::vector<NodePtr> terms;
          for (int j = 0; j < acc->cols; ++j) {
            terms.push_back(math::make(Kind::Mul, {acc->kids[static_cast<size_t>(r * acc->cols + j)],
                                                   m->kids[static_cast<size_t>(j * m->cols + c)]}));
          }
          cells.push_back(terms.size() == 1 ? terms[0] : math::make(Kind::Add, terms));
        }
      }
      acc = make_matrix(acc->rows, m->cols, cells);
    }
    if (!acc) return nullptr;
    if (scalars.empty()) return acc;
    std::vector<NodePtr> cells;
    for (const auto& c : acc->kids) {
      std::vector<NodePtr> f = scalars;
      f.push_back(c);
      cells.push_back(math::make(Kind::Mul, f));
    }
    return make_matrix(acc->rows, acc->cols, cells);
  }
  return nullptr;
}

bool scalars_equal(const NodePtr& g, const NodePtr& p, Context& ctx, int depth) {
  // x% is x or x/100, whichever the other side means
  if (g->kind == Kind::Percent || p->kind == Kind::Percent) {
    if (g->kind == Kind::Percent && p->kind == Kind::Percent) return equal(g->kids[0], p->kids[0], ctx, depth + 1);
    const NodePtr& pct = g->kind == Kind::Percent ? g : p;
    const NodePtr& other = g->kind == Kind::Percent ? p : g;
    const NodePtr x = pct->kids[0];
    if (equal(x, other, ctx, depth + 1)) return true;
    return scalars_equal(math::make(Kind::Div, {x, math::make(Kind::Number, {}, "100")}), other, ctx, depth + 1);
  }
  const Value a = eval(*g), b = eval(*p);
  if (a.state == State::Value && b.state == State::Value) {
    if (std::isinf(a.v) || std::isinf(b.v)) return a.v == b.v;
    if (float_atomic(*g) || float_atomic(*p)) {
      return rounded_equal(a, b, ctx.rounding) && within_written_precision(*g, a, b) &&
             within_written_precision(*p, b, a);
    }
    if (a.q && b.q) return *a.q == *b.q;
    if (a.rational && b.rational) {
      // exact values past 128 bits: GiNaC has big integers
      return symbolic(math::SymbolicOp::Equal, *g, *p, ctx).value_or(0) == 1;
    }
    return std::abs(a.v - b.v) <= 1e-12L * std::max({1.0L, std::abs(a.v), std::abs(b.v)});
  }
  if (a.state == State::Undefined || a.state == State::TooBig || b.state == State::Undefined ||
      b.state == State::TooBig) {
    return false;
  }
  return symbolic(math::SymbolicOp::Equal, *g, *p, ctx).value_or(0) == 1;
}

bool equal(NodePtr g, NodePtr p, Context& ctx, int depth) {
  if (depth > 64 || ctx.expired()) return false;
  if (math::canonical(*g) == math::canonical(*p)) return true;
  // Assignments compare by value: x = 3 against 3, "x = 5+5+1 = 11" as x = 11 (math-verify's rules: the
  // gold's form leads, so "2x + z = 1" is not "1").
  const bool g_eq = is_equation(*g), p_eq = is_equation(*p);
  const bool g_asg = is_assignment(*g), p_asg = is_assignment(*p);
  if (g_asg) g = first_and_last(g);
  if (p_asg) p = first_and_last(p);
  if (p_eq && !g_eq) {
    p = p->kids.back();
  } else if (g_asg && !p_eq) {
    g = g->kids.back();
  }
  // an inequality against a set: the set it describes
  if (is_relation(*g) && is_setlike(*p)) {
    if (NodePtr s = relation_as_set(*g)) g = s;
  }
  if (ctx.allow_set_relation && is_relation(*p) && is_setlike(*g)) {
    if (NodePtr s = relation_as_set(*p)) p = s;
  }
  if (math::canonical(*g) == math::canonical(*p)) return true;
  if (is_relation(*g) || is_relation(*p)) {
    return is_relation(*g) && is_relation(*p) && relations_equal(*g, *p, ctx, depth);
  }
  if (contains_matrix(*g) || contains_matrix(*p)) {
    const NodePtr x = matrix_value(g), y = matrix_value(p);
    if (!x || !y || x->rows != y->rows || x->cols != y->cols) return false;
    return in_order(x->kids, y->kids, ctx, depth);
  }
  if (is_collection(*g) || is_collection(*p)) return collections_equal(g, p, ctx, depth);
  if (g->kind == Kind::Text || p->kind == Kind::Text) {
    const auto a = word(*g), b = word(*p);
    return a && b && *a == *b;
  }
  return scalars_equal(g, p, ctx, depth);
}

// Constant sub-expressions with exact values become their value, for a voting key: 0.5, 1/2 and \frac{2}{4}
// are all "1/2".
NodePtr fold_constants(const NodePtr& n) {
  if ((n->kind == Kind::Number && !n->is_float) || n->kind == Kind::Symbol || n->kind == Kind::Text) return n;
  const bool scalar = !is_collection(*n) && n->kind != Kind::Relation && n->kind != Kind::Matrix &&
                      n->kind != Kind::Percent && n->kind != Kind::Opaque;
  if (scalar && !math::has_free_parts(*n)) {
    const Value v = eval(*n);
    if (v.state == State::Value && v.q) {
      auto text = [](i128 x) {
        std::string s;
        const bool neg = x < 0;
        if (neg) x = -x;
        do {
          s += static_cast<char>('0' + static_cast<int>(x % 10));
          x /= 10;
        } while (x > 0);
        std::reverse(s.begin(), s.end());
        return s;
      };
      NodePtr num = math::make(Kind::Number, {}, text(v.q->n));
      if (v.q->d != 1) num = math::make(Kind::Div, {num, math::make(Kind::Number, {}, text(v.q->d))});
      return v.q->n < 0 ? math::make(Kind::Neg, {num}) : num;
    }
  }
  if (n->kids.empty()) return n;
  auto copy = std::make_shared<Node>(*n);
  for (auto& k : copy->kids) k = fold_constants(k);
  return copy;
}

std::string compact(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (!is_space(c)) out += c;
  }
  return out;
}

// The part after the last '=' of a chain of three or more parts with no list in it, else the text itself.
std::string last_equals_part(const std::string& s) {
  if (s.find_first_of(",;") != std::string::npos) return s;
  std::vector<size_t> cuts;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '=' && (i == 0 || (s[i - 1] != '\\' && s[i - 1] != '<' && s[i - 1] != '>' && s[i - 1] != '!'))) {
      cuts.push_back(i);
    }
  }
  if (cuts.size() < 2) return s;
  return trim(std::string_view(s).substr(cuts.back() + 1));
}

}  // namespace

std::optional<std::string> extract_answer(std::string_view response, const ExtractOptions& options) {
  const std::string_view text = options.ignore_think ? strip_think(response) : response;
  std::optional<Candidate> found;
  const std::string& mode = options.mode;
  if (mode == "boxed") {
    found = boxed(text);
  } else if (mode == "gsm8k") {
    found = gsm8k(text);
  } else if (mode == "answer_is") {
    found = answer_is(text, options.number_fallback);
  } else if (mode == "last_dollar") {
    found = last_latex(text);
  } else if (mode == "last_number") {
    found = last_number(text);
  } else if (mode == "auto") {
    // the model's last word: a box, or a later "the answer is x"
    auto box = boxed(text);
    auto stated = answer_is(text, options.number_fallback);
    if (box && stated) {
      found = stated->end > box->end ? stated : box;
    } else {
      found = box ? box : stated;
    }
    if (!found) found = gsm8k(text);
    if (!found) found = last_math(text, options.number_fallback);
  } else {
    throw std::invalid_argument("extract_answer: unknown mode '" + mode +
                                "' (auto, boxed, gsm8k, answer_is, last_dollar, last_number)");
  }
  if (!found) return std::nullopt;
  std::string answer = trim(found->text);
  if (answer.empty()) return std::nullopt;
  return answer;
}

std::string normalize_answer(std::string_view answer) {
  const std::string cleaned = math::clean_answer(answer);
  try {
    return math::canonical(*fold_constants(math::parse_answer(cleaned)));
  } catch (const math::ParseError&) {
    return compact(cleaned);
  }
}

bool answers_equal(std::string_view gold, std::string_view pred, double timeout_s) {
  VerifyOptions options;
  options.timeout_s = timeout_s;
  return answers_equal(gold, pred, options);
}

bool answers_equal(std::string_view gold, std::string_view pred, const VerifyOptions& options) {
  Context ctx;
  const auto budget = std::chrono::duration<double>(std::max(options.timeout_s, 0.0));
  ctx.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(budget);
  ctx.rounding = options.float_rounding;
  ctx.allow_set_relation = options.allow_set_relation_comp;
  try {
    const std::string g = math::clean_answer(gold), p = math::clean_answer(pred);
    if (g.empty() || p.empty()) return false;
    if (g == p) return true;
    NodePtr gt, pt;
    try {
      gt = math::parse_answer(g);
      pt = math::parse_answer(p);
    } catch (const math::ParseError&) {
      // An unreadable chain "1 = \\zzz = x = 0" stands for its last value (as math-verify reads it); what we
      // still cannot read is compared as text.
      const std::string g_last = last_equals_part(g), p_last = last_equals_part(p);
      if (g_last == g && p_last == p) return compact(g) == compact(p);
      return answers_equal(g_last, p_last, options);
    }
    if (!options.strict) {
      // variables matched by position in sorted order: f(y) against f(x) is f(x)
      const auto gn = math::symbol_names(*gt), pn = math::symbol_names(*pt);
      if (gn.size() == pn.size() && gn != pn) {
        std::vector<std::pair<std::string, std::string>> renames;
        for (size_t k = 0; k < gn.size(); ++k) renames.emplace_back(pn[k], gn[k]);
        pt = math::rename_symbols(pt, renames);
      }
    }
    return equal(gt, pt, ctx);
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace introspect::reward
