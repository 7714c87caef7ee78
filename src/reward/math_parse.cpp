// Cleaning and parsing of math answers (see math_answer.h).
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "math_answer.h"

namespace introspect::reward::math {

NodePtr make(Kind kind, std::vector<NodePtr> kids, std::string text) {
  auto n = std::make_shared<Node>();
  n->kind = kind;
  n->kids = std::move(kids);
  n->text = std::move(text);
  return n;
}

namespace {

bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

bool contains(std::string_view s, std::string_view what) { return s.find(what) != std::string_view::npos; }

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The index of the brace closing the one at `open`, or npos.
size_t matching_brace(std::string_view s, size_t open, size_t limit = std::string_view::npos) {
  limit = std::min(limit, s.size());
  int depth = 0;
  for (size_t i = open; i < limit; ++i) {
    if (s[i] == '\\' && i + 1 < limit && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;  // \{ and \} are set braces, not groups
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i;
  }
  return std::string_view::npos;
}

// "and", "or", ",", ";" between two boxes: they give several answers.
bool has_separator(std::string_view between) {
  if (between.find_first_of(",;") != std::string_view::npos) return true;
  for (std::string_view word : {"and", "or"}) {
    for (size_t p = between.find(word); p != std::string_view::npos; p = between.find(word, p + 1)) {
      const bool left_ok = p == 0 || !is_letter(between[p - 1]);
      const bool right_ok = p + word.size() >= between.size() || !is_letter(between[p + word.size()]);
      if (left_ok && right_ok) return true;
    }
  }
  return false;
}

}  // namespace

std::string boxed_content(std::string_view text) {
  std::vector<std::string> found;  // right to left
  size_t search_end = text.size(), max_pos = text.size();
  size_t later_box_start = std::string_view::npos;
  while (found.size() < 64) {  // several answers, not thousands of boxes
    const std::string_view hay = text.substr(0, search_end);
    const size_t bi = hay.rfind("\\boxed"), fi = hay.rfind("\\fbox");
    if (bi == std::string_view::npos && fi == std::string_view::npos) break;
    const bool is_boxed = bi != std::string_view::npos && (fi == std::string_view::npos || bi > fi);
    const size_t start = is_boxed ? bi : fi;
    size_t p = start + (is_boxed ? 6 : 5);
    if (p < max_pos && is_letter(text[p])) {  // \boxedsomething is another command
      search_end = start;
      continue;
    }
    while (p < max_pos && is_space(text[p])) ++p;
    if (p >= max_pos) break;
    if (text[p] != '{') {
      // "\boxed 5": the token after the space.
      if (found.empty()) {
        size_t e = p;
        while (e < max_pos && !is_space(text[e]) && text[e] != '$') ++e;
        found.emplace_back(text.substr(p, e - p));
      }
      break;
    }
    const size_t close = matching_brace(text, p, max_pos);
    if (close == std::string_view::npos) {
      if (found.empty()) found.push_back(trim(text.substr(p + 1, max_pos - p - 1)));  // unclosed: the rest
      break;
    }
    std::string content = trim(text.substr(p + 1, close - p - 1));
    if (!found.empty()) {
      // An earlier box joins the answer when it is right before the later one, or a separator stands between
      // two different answers (as math-verify's "last" mode).
      const std::string_view between = text.substr(close + 1, later_box_start - close - 1);
      const bool close_by = between.size() < 10;
      const bool listed = content != found.back() && between.size() < 70 && has_separator(between);
      if (!close_by && !listed) break;
    }
    if (found.empty() || found.back() != content) found.push_back(std::move(content));
    later_box_start = start;
    max_pos = start;
    search_end = start;
  }
  if (found.empty()) return {};
  if (found.size() == 1) return found[0];
  std::string joined = "\\{";
  for (size_t i = found.size(); i-- > 0;) {
    joined += found[i];
    if (i > 0) joined += ", ";
  }
  return joined + "\\}";
}

namespace {

// Commands dropped, with the delimiter after them kept (\left( -> ().
const std::set<std::string, std::less<>> kSizingCommands = {
    "left", "right", "middle", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr",
    "biggl", "biggr", "Biggl", "Biggr", "bigm", "Bigm"};
const std::set<std::string, std::less<>> kDroppedCommands = {
    "displaystyle", "textstyle", "scriptstyle", "limits", "nolimits", "degree", "noindent"};
const std::set<std::string, std::less<>> kSpaceCommands = {
    "quad", "qquad", "enspace", "thinspace", "medspace", "thickspace", "space", "nobreakspace", "enskip"};
const std::map<std::string, std::string, std::less<>> kRenamedCommands = {
    {"dfrac", "\\frac"}, {"tfrac", "\\frac"}, {"cfrac", "\\frac"}, {"dbinom", "\\binom"}, {"tbinom", "\\binom"},
    {"lvert", "|"}, {"rvert", "|"}, {"vert", "|"}, {"lVert", "|"}, {"rVert", "|"}, {"Vert", "|"}, {"mid", "|"},
    {"lbrace", "\\{"}, {"rbrace", "\\}"}, {"langle", "("}, {"rangle", ")"}, {"lbrack", "["}, {"rbrack", "]"},
    {"textbf", "\\text"}, {"textit", "\\text"}, {"textrm", "\\text"}, {"textnormal", "\\text"},
    {"textsf", "\\text"}, {"texttt", "\\text"}, {"textup", "\\text"}, {"mathrm", "\\text"}, {"mathbf", "\\text"},
    {"mathit", "\\text"}, {"mathsf", "\\text"}, {"mathtt", "\\text"}, {"mbox", "\\text"}, {"hbox", "\\text"},
    {"emph", "\\text"}, {"textsc", "\\text"}, {"leqslant", "\\leq"}, {"geqslant", "\\geq"}, {"le", "\\leq"},
    {"ge", "\\geq"}, {"ne", "\\neq"}, {"lt", "<"}, {"gt", ">"}, {"leftrightarrow", "\\iff"}, {"dots", "\\ldots"},
    {"cdots", "\\ldots"}, {"dotsc", "\\ldots"}, {"dotsb", "\\ldots"}, {"varnothing", "\\emptyset"},
    {"thetasym", "\\theta"}, {"centerdot", "\\cdot"}, {"ast", "*"}};

// One pass over the commands: sizing and style commands out, spacing to blanks, synonyms renamed.
std::string rewrite_commands(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '~') {
      out += ' ';
      ++i;
      continue;
    }
    if (s[i] != '\\' || i + 1 >= s.size()) {
      out += s[i++];
      continue;
    }
    const char next = s[i + 1];
    if (next == '!') {  // negative thin space: gone, with the blanks after it ("11,\! 111" is 11111)
      i += 2;
      while (i < s.size() && is_space(s[i])) ++i;
      continue;
    }
    if (next == ',' || next == ';' || next == ':' || next == '>' || next == ' ' || next == '\t' || next == '\n') {
      out += ' ';
      i += 2;
      continue;
    }
    if (!is_letter(next)) {
      out.append(s, i, 2);
      i += 2;
      continue;
    }
    size_t e = i + 1;
    while (e < s.size() && is_letter(s[e])) ++e;
    std::string name(s.substr(i + 1, e - i - 1));
    // "\quadx" is "\quad x".
    for (std::string_view space : {"qquad", "quad"}) {
      if (name.size() > space.size() && name.compare(0, space.size(), space) == 0 &&
          !kRenamedCommands.count(name) && !kSpaceCommands.count(name)) {
        e = i + 1 + space.size();
        name = std::string(space);
        break;
      }
    }
    i = e;
    if (kSizingCommands.count(name)) {
      while (i < s.size() && is_space(s[i])) ++i;
      if (i < s.size() && s[i] == '.') ++i;  // \left. and \right. stand for nothing
      continue;
    }
    if (kDroppedCommands.count(name)) continue;
    if (kSpaceCommands.count(name)) {
      out += ' ';
      continue;
    }
    if (name == "hspace" || name == "vspace" || name == "phantom" || name == "label" || name == "tag") {
      while (i < s.size() && (is_space(s[i]) || s[i] == '*')) ++i;
      if (i < s.size() && s[i] == '{') {
        const size_t close = matching_brace(s, i);
        i = close == std::string_view::npos ? s.size() : close + 1;
      }
      continue;
    }
    if ((name == "mathrm" || name == "mathit") && i + 2 < s.size() && s[i] == '{' && is_letter(s[i + 1]) &&
        s[i + 2] == '}') {
      // \mathrm{e}, \mathrm{d}: an upright letter, not text
      out += ' ';
      out += s[i + 1];
      out += ' ';
      i += 3;
      continue;
    }
    if (const auto it = kRenamedCommands.find(name); it != kRenamedCommands.end()) {
      out += it->second;
      // keep a following letter apart from a renamed command (\ge x -> \geq x, not \geqx)
      if (is_letter(it->second.back()) && i < s.size() && is_letter(s[i])) out += ' ';
      continue;
    }
    out += '\\';
    out += name;
  }
  return out;
}

// \frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}, \sqrt3 -> \sqrt{3}, \frac\pi2 -> \frac{\pi}{2}.
std::string brace_short_arguments(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  auto take_argument = [&](size_t& i) {
    while (i < s.size() && s[i] == ' ') ++i;
    if (i >= s.size()) return;
    if (s[i] == '{') {
      const size_t close = matching_brace(s, i);
      const size_t end = close == std::string_view::npos ? s.size() : close + 1;
      out.append(s, i, end - i);
      i = end;
      return;
    }
    out += '{';
    if (s[i] == '\\' && i + 1 < s.size() && is_letter(s[i + 1])) {
      size_t e = i + 1;
      while (e < s.size() && is_letter(s[e])) ++e;
      out.append(s, i, e - i);
      i = e;
    } else {
      out += s[i++];
    }
    out += '}';
  };
  for (size_t i = 0; i < s.size();) {
    const bool frac = s.compare(i, 5, "\\frac") == 0 && (i + 5 >= s.size() || !is_letter(s[i + 5]));
    const bool binom = s.compare(i, 6, "\\binom") == 0 && (i + 6 >= s.size() || !is_letter(s[i + 6]));
    const bool sqrt = s.compare(i, 5, "\\sqrt") == 0 && (i + 5 >= s.size() || !is_letter(s[i + 5]));
    if (frac || binom) {
      const size_t name = frac ? 5 : 6;
      out.append(s, i, name);
      i += name;
      take_argument(i);
      take_argument(i);
    } else if (sqrt) {
      out.append(s, i, 5);
      i += 5;
      while (i < s.size() && s[i] == ' ') ++i;
      if (i < s.size() && s[i] == '[') {
        const size_t close = s.find(']', i);
        const size_t end = close == std::string_view::npos ? s.size() : close + 1;
        out.append(s, i, end - i);
        i = end;
      }
      take_argument(i);
    } else {
      out += s[i++];
    }
  }
  return out;
}

// Replaces whole words (not inside longer words, not command names); `eat_before` also takes the blanks and
// an optional comma before the word.
void replace_word(std::string& s, std::string_view word, std::string_view to, bool eat_before, bool eat_comma) {
  std::string out;
  size_t pos = 0;
  for (size_t p = s.find(word); p != std::string::npos; p = s.find(word, p + 1)) {
    if (p < pos) continue;
    const bool left_ok = p == 0 || (!is_letter(s[p - 1]) && s[p - 1] != '\\');
    const bool right_ok = p + word.size() >= s.size() || !is_letter(s[p + word.size()]);
    if (!left_ok || !right_ok) continue;
    size_t b = p;
    if (eat_before) {
      while (b > pos && is_space(s[b - 1])) --b;
      if (eat_comma && b > pos && s[b - 1] == ',') {
        --b;
        while (b > pos && is_space(s[b - 1])) --b;
      }
    }
    out.append(s, pos, b - pos);
    out.append(to);
    pos = p + word.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// "^\circ", "^{\circ}", "\circ", "°" after a number are degrees, which the answer does not need.
void remove_degrees(std::string& s) {
  replace_all(s, "\xC2\xB0", "");  // °
  for (size_t p = s.find("\\circ"); p != std::string::npos; p = s.find("\\circ", p)) {
    if (p + 5 < s.size() && is_letter(s[p + 5])) {
      ++p;
      continue;
    }
    size_t b = p, e = p + 5;
    size_t q = b;
    while (q > 0 && is_space(s[q - 1])) --q;
    if (q > 0 && s[q - 1] == '{') {  // ^{\circ}
      size_t r = e;
      while (r < s.size() && is_space(s[r])) ++r;
      if (r < s.size() && s[r] == '}') {
        size_t c = q - 1;
        while (c > 0 && is_space(s[c - 1])) --c;
        if (c > 0 && s[c - 1] == '^') {
          b = c - 1;
          e = r + 1;
        }
      }
    } else if (q > 0 && s[q - 1] == '^') {
      b = q - 1;
    }
    s.erase(b, e - b);
    p = b;
  }
}

const std::vector<std::string_view> kUnitWords = {
    "cm", "mm", "km", "m", "meter", "metre", "centimeter", "centimetre", "millimeter", "kilometer", "inch", "inche",
    "in", "ft", "feet", "foot", "yd", "yard", "mile", "mi", "kg", "g", "gram", "mg", "lb", "pound", "oz", "ounce",
    "ton", "s", "sec", "second", "min", "minute", "h", "hr", "hour", "day", "week", "month", "year", "yr",
    "dollar", "cent", "euro", "degree", "deg", "radian", "rad", "unit", "sq", "square", "cubic", "liter", "litre",
    "l", "ml", "mL", "L", "gallon", "gal", "quart", "pint", "cup", "mph", "kmh", "kph", "kmph", "mps",
    "people", "person", "student", "child", "children", "way", "time", "point", "page", "book", "apple", "coin",
    "tile", "marble", "ball", "game", "step", "term", "digit", "integer", "number", "value", "pencil", "candie",
    "candy", "cookie", "box", "car", "boy", "girl", "men", "women", "hand", "handshake", "egg", "cupcake", "pie",
    "slice", "stamp", "card", "seat", "row", "team", "chair", "triangle", "rectangle", "side", "vertice",
    "edge", "face", "sheep", "cow", "dog", "cat", "bird", "fish", "tree", "flower", "hat", "shirt"};

bool is_unit_word(std::string_view w) {
  for (std::string_view u : kUnitWords) {
    if (w == u) return true;
    if (w.size() == u.size() + 1 && w.back() == 's' && w.compare(0, u.size(), u) == 0) return true;
    if (w.size() == u.size() + 2 && w.compare(w.size() - 2, 2, "es") == 0 && w.compare(0, u.size(), u) == 0)
      return true;
  }
  return false;
}

// Trailing units: \text{ cm}^2, \mbox{ miles}, "35 cm", "125 miles" (only after a number or a closing bracket,
// so that a lone \text{Evelyn} or the product "2c" stay).
void remove_trailing_units(std::string& s) {
  for (int round = 0; round < 4; ++round) {
    const std::string before = s;
    std::string t = trim(s);
    // optional ^2 / ^{2} after the unit
    size_t end = t.size();
    if (end >= 2 && t[end - 2] == '^' && is_digit(t[end - 1])) {
      end -= 2;
    } else if (end >= 4 && t.compare(end - 4, 2, "^{") == 0 && is_digit(t[end - 2]) && t[end - 1] == '}') {
      end -= 4;
    }
    if (end > 0 && t[end - 1] == '}') {
      // find the \text{ that opens this group
      int depth = 0;
      size_t open = std::string::npos;
      for (size_t i = end; i-- > 0;) {
        if (t[i] == '}') ++depth;
        if (t[i] == '{' && --depth == 0) {
          open = i;
          break;
        }
      }
      if (open != std::string::npos && open >= 5 && t.compare(open - 5, 5, "\\text") == 0) {
        const std::string rest = trim(std::string_view(t).substr(0, open - 5));
        const std::string inner = trim(std::string_view(t).substr(open + 1, end - open - 2));
        const bool unit_like = !inner.empty() && (is_letter(inner[0]) || inner[0] == '\\');
        if (!rest.empty() && unit_like && rest.back() != '=' && rest.back() != ',' && rest.back() != '(') {
          s = rest;
          continue;
        }
      }
    }
    // a plain unit word after a number
    size_t w = end;
    while (w > 0 && (is_letter(t[w - 1]) || t[w - 1] == '/')) --w;
    if (w < end && w > 0 && is_space(t[w - 1]) && end == t.size()) {
      const std::string word(t.substr(w, end - w));
      const std::string rest = trim(std::string_view(t).substr(0, w));
      if (is_unit_word(word) && !rest.empty() &&
          (is_digit(rest.back()) || rest.back() == '}' || rest.back() == ')' || rest.back() == '%')) {
        s = rest;
        continue;
      }
    }
    if (s == before) break;
  }
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_digit(c); });
}

// "1,234,567.5" / "1 234 567" as the whole answer: the separators go. "0,111" is a decimal comma.
void remove_thousands_separators(std::string& s) {
  std::string body = s;
  std::string suffix;
  if (!body.empty() && body.back() == '%') {
    suffix = "%";
    body.pop_back();
    while (!body.empty() && is_space(body.back())) body.pop_back();
  }
  std::string sign;
  if (!body.empty() && body[0] == '-') {
    sign = "-";
    body.erase(0, 1);
  }
  std::string decimals;
  if (const size_t dot = body.find('.'); dot != std::string::npos) {
    decimals = body.substr(dot);
    body.resize(dot);
    if (!all_digits(std::string_view(decimals).substr(1))) return;
  }
  for (char sep : {',', ' '}) {
    if (body.find(sep) == std::string::npos) continue;
    std::vector<std::string> groups;
    size_t start = 0;
    while (true) {
      const size_t p = body.find(sep, start);
      groups.push_back(body.substr(start, p == std::string::npos ? std::string::npos : p - start));
      if (p == std::string::npos) break;
      start = p + 1;
    }
    if (sep == ',' && groups.size() == 2 && groups[0] == "0" && all_digits(groups[1]) && decimals.empty()) {
      s = sign + "0." + groups[1] + suffix;
      return;
    }
    bool ok = groups.size() >= 2 && all_digits(groups[0]) && groups[0].size() <= 3 && groups[0][0] != '0';
    for (size_t g = 1; ok && g < groups.size(); ++g) ok = groups[g].size() == 3 && all_digits(groups[g]);
    if (ok) {
      std::string joined;
      for (const auto& g : groups) joined += g;
      s = sign + joined + decimals + suffix;
      return;
    }
  }
}

// "14{,}916" and "14 {, }916" are thousands; a braced comma elsewhere is a comma.
void join_braced_commas(std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '{') {
      size_t j = i + 1;
      while (j < s.size() && is_space(s[j])) ++j;
      if (j < s.size() && s[j] == ',') {
        size_t k = j + 1;
        while (k < s.size() && is_space(s[k])) ++k;
        if (k < s.size() && s[k] == '}') {
          size_t before = out.size();
          while (before > 0 && is_space(out[before - 1])) --before;
          size_t digits = k + 1;
          while (digits < s.size() && is_digit(s[digits])) ++digits;
          const bool thousands = before > 0 && is_digit(out[before - 1]) && digits - (k + 1) == 3;
          out.resize(before);
          if (!thousands) out += ',';
          i = k;
          continue;
        }
      }
    }
    out += s[i];
  }
  s = std::move(out);
}

// "\text{ and }" / "\text{or}" between answers, with a comma before it: one comma.
void replace_text_separators(std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 6, "\\text{") == 0) {
      const size_t close = s.find('}', i + 6);
      if (close != std::string::npos) {
        std::string inner = trim(std::string_view(s).substr(i + 6, close - i - 6));
        if (!inner.empty() && inner[0] == ',') inner = trim(std::string_view(inner).substr(1));
        if (inner.empty() || inner == "and" || inner == "or") {
          while (!out.empty() && is_space(out.back())) out.pop_back();
          if (!out.empty() && out.back() == ',') out.pop_back();
          out += ',';
          i = close + 1;
          continue;
        }
      }
    }
    out += s[i++];
  }
  s = std::move(out);
}

}  // namespace

std::string clean_answer(std::string_view answer) {
  std::string s(answer);
  if (contains(s, "\\boxed") || contains(s, "\\fbox")) s = boxed_content(s);  // an empty box is no answer
  // JSON-escaped LaTeX ("\\frac"): one backslash, except in matrices where "\\" ends a row.
  if (!contains(s, "matrix") && !contains(s, "array")) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\\' && i + 2 < s.size() && s[i + 1] == '\\' && is_letter(s[i + 2])) continue;
      out += s[i];
    }
    s = std::move(out);
  }
  // Unicode that models write.
  static const std::array<std::pair<std::string_view, std::string_view>, 22> kUnicode = {{
      {"\xE2\x88\x92", "-"},          {"\xC3\x97", "\\times "},     {"\xC3\xB7", "\\div "},
      {"\xCF\x80", "\\pi "},           {"\xE2\x88\x9A", "\\sqrt "},  {"\xE2\x89\xA4", "\\leq "},
      {"\xE2\x89\xA5", "\\geq "},      {"\xE2\x89\xA0", "\\neq "},   {"\xE2\x88\x9E", "\\infty "},
      {"\xC2\xB2", "^2"},              {"\xC2\xB3", "^3"},           {"\xC2\xB7", "\\cdot "},
      {"\xE2\x8B\x85", "\\cdot "},     {"\xE2\x80\xA6", "\\ldots "}, {"\xE2\x82\xAC", ""},
      {"\xC2\xA3", ""},                {"\xC2\xA5", ""},             {"\xE2\x88\xAA", "\\cup "},
      {"\xE2\x88\xA9", "\\cap "},      {"\xE2\x88\x88", "\\in "},    {"\xC2\xB1", "\\pm "},
      {"\xE2\x80\x89", " "},
  }};
  for (const auto& [from, to] : kUnicode) replace_all(s, from, to);
  s = rewrite_commands(s);
  // Math delimiters and dollar signs (currency or math mode) carry no value.
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  for (std::string_view delim : {"\\(", "\\)", "\\[", "\\]"}) replace_all(s, delim, " ");
  join_braced_commas(s);
  s = brace_short_arguments(s);
  remove_degrees(s);
  // Percent in words; \% and % are the same sign.
  replace_all(s, "\\%", "%");
  replace_all(s, "\\text{percent}", "%");
  replace_all(s, "\\text{ percent}", "%");
  replace_word(s, "percentage", "%", true, false);
  replace_word(s, "percent", "%", true, false);
  replace_word(s, "pct", "%", true, false);
  // Several answers joined by words.
  replace_text_separators(s);
  replace_word(s, "and", ",", true, true);
  replace_word(s, "or", ",", true, true);
  replace_word(s, "infinity", "\\infty ", false, false);
  replace_word(s, "inf", "\\infty ", false, false);
  // A trailing sentence stop or comma.
  s = trim(s);
  while (!s.empty() && (s.back() == '.' || s.back() == ',' || s.back() == ';')) {
    if (s.back() == '.' && s.size() >= 2 && s[s.size() - 2] == '\\') break;
    s.pop_back();
    s = trim(s);
  }
  remove_trailing_units(s);
  s = trim(s);
  // Leading commas left by "and" at the start.
  while (!s.empty() && s[0] == ',') s = trim(std::string_view(s).substr(1));
  remove_thousands_separators(s);
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Tokens and parser.

namespace {

enum class Tok { End, Num, Letter, Cmd, Char };

struct Token {
  Tok type = Tok::End;
  std::string text;  // number literal, letter, command name (without backslash), or the character
  std::string arg;   // raw brace argument of \text, \operatorname, \begin, \end, \mathbb, ...
  bool space_before = false;
};

const std::set<std::string, std::less<>> kRawArgCommands = {
    "text", "operatorname", "begin", "end", "mathbb", "mathcal", "mathfrak", "mathscr", "overline", "vec", "hat",
    "bar", "widehat", "tilde", "widetilde", "overrightarrow", "overleftrightarrow", "underline", "boldsymbol", "bm",
    "dot", "ddot", "check"};

std::vector<Token> tokenize(std::string_view s) {
  std::vector<Token> out;
  bool space = false;
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    if (is_space(c)) {
      space = true;
      ++i;
      continue;
    }
    Token t;
    t.space_before = space;
    space = false;
    if (is_digit(c) || (c == '.' && i + 1 < s.size() && is_digit(s[i + 1]))) {
      size_t e = i;
      while (e < s.size() && is_digit(s[e])) ++e;
      if (e < s.size() && s[e] == '.' && e + 1 < s.size() && is_digit(s[e + 1])) {
        ++e;
        while (e < s.size() && is_digit(s[e])) ++e;
      } else if (e < s.size() && s[e] == '.' && e > i && e + 1 < s.size() &&
                 std::string_view("+-*/^)]},").find(s[e + 1]) != std::string_view::npos) {
        ++e;  // "1./3": a number with a bare decimal point
      }
      t.type = Tok::Num;
      t.text = std::string(s.substr(i, e - i));
      i = e;
    } else if (is_letter(c)) {
      t.type = Tok::Letter;
      t.text = std::string(1, c);
      ++i;
    } else if (c == '\\' && i + 1 < s.size()) {
      t.type = Tok::Cmd;
      if (is_letter(s[i + 1])) {
        size_t e = i + 1;
        while (e < s.size() && is_letter(s[e])) ++e;
        t.text = std::string(s.substr(i + 1, e - i - 1));
        i = e;
        if (kRawArgCommands.count(t.text)) {
          size_t p = i;
          while (p < s.size() && is_space(s[p])) ++p;
          if (p < s.size() && s[p] == '{') {
            const size_t close = matching_brace(s, p);
            if (close == std::string_view::npos) throw ParseError("unbalanced braces after \\" + t.text);
            t.arg = std::string(s.substr(p + 1, close - p - 1));
            i = close + 1;
          } else if (p < s.size() && t.text != "text" && t.text != "begin" && t.text != "end") {
            // \vec v, \bar x: one character
            t.arg = std::string(1, s[p]);
            i = p + 1;
          }
        }
      } else {
        t.text = std::string(1, s[i + 1]);
        i += 2;
      }
    } else {
      t.type = Tok::Char;
      // multi-byte UTF-8 stays one token
      size_t len = 1;
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0xF0) len = 4;
      else if (u >= 0xE0) len = 3;
      else if (u >= 0xC0) len = 2;
      t.text = std::string(s.substr(i, std::min(len, s.size() - i)));
      i += len;
    }
    out.push_back(std::move(t));
  }
  out.push_back(Token{});
  return out;
}

const std::set<std::string, std::less<>> kGreek = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "omicron", "rho", "varrho", "sigma", "varsigma", "tau", "upsilon", "phi",
    "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi",
    "Psi", "Omega", "ell", "hbar", "imath", "jmath", "aleph", "nabla", "partial", "odot", "star", "dagger"};

const std::map<std::string, std::string, std::less<>> kFunctions = {
    {"sin", "sin"},   {"cos", "cos"},       {"tan", "tan"},     {"sec", "sec"},       {"csc", "csc"},
    {"cot", "cot"},   {"arcsin", "asin"},   {"arccos", "acos"}, {"arctan", "atan"},   {"sinh", "sinh"},
    {"cosh", "cosh"}, {"tanh", "tanh"},     {"log", "log"},     {"ln", "log"},        {"lg", "log10"},
    {"exp", "exp"},   {"arcsec", "asec"},   {"arccsc", "acsc"}, {"arccot", "acot"},   {"coth", "coth"},
    {"gcd", "gcd"},   {"lcm", "lcm"},       {"max", "max"},     {"min", "min"},       {"det", "det"},
    {"deg", "deg"},   {"sgn", "sgn"},       {"arg", "arg"},     {"Re", "re"},         {"Im", "im"}};

// Letters read as a function when a bracket follows: f(x), g(2), p(x).
bool is_function_letter(const std::string& l) {
  static const std::set<std::string, std::less<>> letters = {"f", "g", "h", "p", "q", "F", "G", "H", "P", "Q"};
  return letters.count(l) > 0;
}

NodePtr number_node(std::string literal) {
  auto n = std::make_shared<Node>();
  n->kind = Kind::Number;
  std::string whole = literal, frac;
  if (const size_t dot = literal.find('.'); dot != std::string::npos) {
    n->is_float = true;
    whole = literal.substr(0, dot);
    frac = literal.substr(dot + 1);
  }
  const size_t nz = whole.find_first_not_of('0');
  whole = nz == std::string::npos ? "0" : whole.substr(nz);
  while (!frac.empty() && frac.back() == '0') frac.pop_back();
  n->text = frac.empty() ? whole : whole + "." + frac;
  return n;
}

NodePtr symbol_node(std::string name) { return make(Kind::Symbol, {}, std::move(name)); }

}  // namespace

bool only_symbols(const Node& n) {
  switch (n.kind) {
    case Kind::Symbol:
    case Kind::Text:
      return true;
    case Kind::Mul:
    case Kind::Tuple:
    case Kind::Div:
      return std::all_of(n.kids.begin(), n.kids.end(), [](const NodePtr& k) { return only_symbols(*k); });
    case Kind::Func:
      return n.text == "abs" && only_symbols(*n.kids[0]);
    case Kind::Opaque:
      return n.text.size() == 1 &&
             std::all_of(n.kids.begin(), n.kids.end(), [](const NodePtr& k) { return only_symbols(*k); });
    default:
      return false;
  }
}

namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  NodePtr parse_top() {
    NodePtr n = parse_sequence_node(/*top=*/true);
    if (peek().type != Tok::End) throw ParseError("unexpected '" + peek().text + "'");
    return n;
  }

 private:
  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;

  struct DepthGuard {
    int& d;
    explicit DepthGuard(int& depth) : d(depth) {
      if (++d > 200) throw ParseError("nested too deeply");
    }
    ~DepthGuard() { --d; }
  };

  const Token& peek(size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& next() {
    const Token& t = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return t;
  }
  bool is_char(const Token& t, std::string_view c) const { return t.type == Tok::Char && t.text == c; }
  bool is_cmd(const Token& t, std::string_view c) const { return t.type == Tok::Cmd && t.text == c; }
  bool accept_char(std::string_view c) {
    if (!is_char(peek(), c)) return false;
    next();
    return true;
  }
  void expect_char(std::string_view c) {
    if (!accept_char(c)) throw ParseError("expected '" + std::string(c) + "'");
  }

  bool at_sequence_end() const {
    const Token& t = peek();
    if (t.type == Tok::End) return true;
    if (t.type == Tok::Char && (t.text == ")" || t.text == "]" || t.text == "}" || t.text == "&")) return true;
    if (t.type == Tok::Cmd && (t.text == "}" || t.text == "\\" || t.text == "end" || t.text == "rfloor" ||
                               t.text == "rceil")) {
      return true;
    }
    return false;
  }

  // Items separated by ',' and ';' (';' outer, ',' inner: "p=5,q=2;p=7,q=2").
  std::vector<NodePtr> parse_sequence(bool& several) {
    std::vector<std::vector<NodePtr>> groups(1);
    bool semicolons = false;
    several = false;
    if (at_sequence_end()) throw ParseError("empty");
    groups.back().push_back(parse_relation());
    while (true) {
      if (accept_char(",")) {
        several = true;
        if (at_sequence_end()) break;  // a trailing comma
        groups.back().push_back(parse_relation());
      } else if (accept_char(";")) {
        several = true;
        semicolons = true;
        if (at_sequence_end()) break;
        groups.emplace_back();
        groups.back().push_back(parse_relation());
      } else {
        break;
      }
    }
    if (!semicolons) return groups[0];
    std::vector<NodePtr> items;
    for (auto& g : groups) {
      if (g.empty()) continue;
      items.push_back(g.size() == 1 ? g[0] : make(Kind::Tuple, g));
    }
    return items;
  }

  NodePtr parse_sequence_node(bool top) {
    bool several = false;
    std::vector<NodePtr> items = parse_sequence(several);
    if (items.size() == 1) return items[0];
    // "a = 4, -8, -10": the values after an assignment belong to it.
    if (top && items[0]->kind == Kind::Relation && items[0]->ops.back() == RelOp::Eq &&
        only_symbols(*items[0]->kids[0]) &&
        std::none_of(items.begin() + 1, items.end(), [](const NodePtr& n) { return n->kind == Kind::Relation; })) {
      auto rel = std::make_shared<Node>(*items[0]);
      std::vector<NodePtr> values{rel->kids.back()};
      values.insert(values.end(), items.begin() + 1, items.end());
      rel->kids.back() = make(Kind::Set, values);
      return rel;
    }
    return make(Kind::List, items);
  }

  std::optional<RelOp> peek_relation(bool& approx, size_t& width) {
    approx = false;
    width = 1;
    const Token& t = peek();
    if (t.type == Tok::Char) {
      const bool eq_next = is_char(peek(1), "=") && !peek(1).space_before;
      if (t.text == "=") return RelOp::Eq;
      if (t.text == "<") {
        if (eq_next) width = 2;
        return eq_next ? RelOp::Le : RelOp::Lt;
      }
      if (t.text == ">") {
        if (eq_next) width = 2;
        return eq_next ? RelOp::Ge : RelOp::Gt;
      }
      if (t.text == "!" && eq_next) {
        width = 2;
        return RelOp::Ne;
      }
      return std::nullopt;
    }
    if (t.type != Tok::Cmd) return std::nullopt;
    if (t.text == "leq") return RelOp::Le;
    if (t.text == "geq") return RelOp::Ge;
    if (t.text == "neq") return RelOp::Ne;
    if (t.text == "in") return RelOp::In;
    if (t.text == "equiv" || t.text == "cong") return RelOp::Eq;
    if (t.text == "approx" || t.text == "sim" || t.text == "simeq" || t.text == "thickapprox") {
      approx = true;
      return RelOp::Eq;
    }
    return std::nullopt;
  }

  NodePtr parse_relation() {
    DepthGuard guard(depth_);
    std::vector<NodePtr> operands{parse_setexpr()};
    std::vector<RelOp> ops;
    while (true) {
      bool approx = false;
      size_t width = 1;
      const auto op = peek_relation(approx, width);
      if (!op) break;
      for (size_t k = 0; k < width; ++k) next();
      NodePtr rhs = parse_setexpr();
      if (approx) {
        // "x \approx 11" gives 11; "x = 1/3 \approx 0.33" keeps x = 1/3.
        if (ops.empty() && only_symbols(*operands[0])) operands = {rhs};
        continue;
      }
      operands.push_back(rhs);
      ops.push_back(*op);
    }
    if (ops.empty()) return operands[0];
    auto rel = make(Kind::Relation, operands);
    std::const_pointer_cast<Node>(rel)->ops = ops;
    return rel;
  }

  NodePtr parse_setexpr() {
    NodePtr lhs = parse_expr();
    while (peek().type == Tok::Cmd && (peek().text == "cup" || peek().text == "cap" || peek().text == "setminus")) {
      std::string op = next().text;
      if (op == "setminus") op = "minus";
      NodePtr rhs = parse_expr();
      if (lhs->kind == Kind::SetOp && lhs->text == op && op != "minus") {
        auto merged = std::make_shared<Node>(*lhs);
        merged->kids.push_back(rhs);
        lhs = merged;
      } else {
        lhs = make(Kind::SetOp, {lhs, rhs}, op);
      }
    }
    return lhs;
  }

  NodePtr parse_expr() {
    DepthGuard guard(depth_);
    std::vector<NodePtr> terms{parse_term()};
    while (true) {
      if (accept_char("+")) {
        terms.push_back(parse_term());
      } else if (accept_char("-")) {
        terms.push_back(make(Kind::Neg, {parse_term()}));
      } else if (is_cmd(peek(), "pm") || is_cmd(peek(), "mp")) {
        const bool mp = next().text == "mp";
        NodePtr left = terms.size() == 1 ? terms[0] : make(Kind::Add, terms);
        NodePtr right = parse_term();
        if (mp) right = make(Kind::Neg, {right});
        terms = {make(Kind::PlusMinus, {left, right})};
      } else {
        break;
      }
    }
    return terms.size() == 1 ? terms[0] : make(Kind::Add, terms);
  }

  bool starts_factor(const Token& t) const {
    switch (t.type) {
      case Tok::Num:
      case Tok::Letter:
        return true;
      case Tok::Char:
        return t.text == "(" || t.text == "[";  // x(y+1), \lambda^5[e^x - 1]
      case Tok::Cmd: {
        static const std::set<std::string, std::less<>> starters = {
            "frac", "sqrt", "binom", "pi", "infty", "text", "operatorname", "begin", "lfloor", "lceil", "mathbb",
            "mathcal", "mathfrak", "mathscr", "overline", "vec", "hat", "bar", "widehat", "tilde", "widetilde",
            "overrightarrow", "underline", "boldsymbol", "bm", "sum", "prod", "int", "lim", "angle", "triangle",
            "dot", "ddot", "check", "emptyset", "ldots"};
        return starters.count(t.text) || kGreek.count(t.text) || kFunctions.count(t.text);
      }
      default:
        return false;
    }
  }

  NodePtr parse_term() {
    DepthGuard guard(depth_);
    NodePtr cur = parse_unary();
    while (true) {
      const Token& t = peek();
      if (is_char(t, "*") || is_cmd(t, "cdot") || is_cmd(t, "times")) {
        next();
        cur = make(Kind::Mul, {cur, parse_unary()});
      } else if (is_char(t, "/") || is_cmd(t, "div")) {
        next();
        cur = make(Kind::Div, {cur, parse_unary()});
      } else if (is_char(t, ":") && starts_factor(peek(1))) {
        next();
        cur = make(Kind::Div, {cur, parse_unary()});
      } else if (starts_factor(t)) {
        const bool frac_next = is_cmd(t, "frac");
        NodePtr factor = parse_power();
        // 2\frac{1}{2} is a mixed number, 5/2
        if (frac_next && is_integer(*cur) && factor->kind == Kind::Div && is_integer(*factor->kids[0]) &&
            is_integer(*factor->kids[1])) {
          cur = make(Kind::Add, {cur, factor});
        } else {
          cur = make(Kind::Mul, {cur, factor});
        }
      } else {
        break;
      }
    }
    return flatten_mul(cur);
  }

  static bool is_integer(const Node& n) { return n.kind == Kind::Number && !n.is_float; }

  static NodePtr flatten_mul(const NodePtr& n) {
    if (n->kind != Kind::Mul) return n;
    std::vector<NodePtr> factors;
    // left-to-right order of the written factors
    std::function<void(const NodePtr&)> walk = [&](const NodePtr& m) {
      if (m->kind == Kind::Mul) {
        for (const auto& k : m->kids) walk(k);
      } else {
        factors.push_back(m);
      }
    };
    walk(n);
    return make(Kind::Mul, factors);
  }

  NodePtr parse_unary() {
    DepthGuard guard(depth_);
    if (accept_char("-")) return make(Kind::Neg, {parse_unary()});
    if (accept_char("+")) return parse_unary();
    if (is_cmd(peek(), "pm") || is_cmd(peek(), "mp")) {
      next();
      return make(Kind::PlusMinus, {parse_unary()});
    }
    return parse_power();
  }

  NodePtr parse_power() {
    NodePtr base = parse_postfix();
    if (accept_char("^")) {
      NodePtr exponent = parse_exponent();
      base = make(Kind::Pow, {base, exponent});
    }
    return base;
  }

  NodePtr parse_exponent() {
    DepthGuard guard(depth_);
    if (accept_char("{")) {
      NodePtr e = parse_relation();
      expect_char("}");
      return e;
    }
    if (accept_char("-")) return make(Kind::Neg, {parse_exponent()});
    if (accept_char("+")) return parse_exponent();
    const Token& t = peek();
    if (t.type == Tok::Num) return number_node(next().text);
    if (t.type == Tok::Letter) return letter_atom(next().text);
    if (t.type == Tok::Cmd || is_char(t, "(")) return parse_postfix();
    throw ParseError("bad exponent");
  }

  NodePtr parse_group_argument() {
    if (accept_char("{")) {
      if (accept_char("}")) throw ParseError("empty group");
      bool several = false;
      std::vector<NodePtr> items = parse_sequence(several);
      expect_char("}");
      return items.size() == 1 ? items[0] : make(Kind::Set, items);
    }
    const Token& t = peek();
    if (t.type == Tok::Num) return number_node(next().text);
    if (t.type == Tok::Letter) return letter_atom(next().text);
    return parse_primary();
  }

  NodePtr parse_subscript() {
    if (accept_char("{")) {
      bool several = false;
      std::vector<NodePtr> items = parse_sequence(several);
      expect_char("}");
      return items.size() == 1 ? items[0] : make(Kind::Tuple, items);
    }
    const Token& t = peek();
    if (t.type == Tok::Num) {
      // a_12 is a_{12}; \log_2 8 is \log_{2} 8 (one digit only before a blank)
      return number_node(next().text);
    }
    if (t.type == Tok::Letter) return symbol_node(next().text);
    if (t.type == Tok::Cmd) return parse_primary();
    throw ParseError("bad subscript");
  }

  NodePtr parse_postfix() {
    NodePtr p = parse_primary();
    while (true) {
      const Token& t = peek();
      if (is_char(t, "!") && !(is_char(peek(1), "=") && !peek(1).space_before)) {
        next();
        p = make(Kind::Func, {p}, "factorial");
      } else if (is_char(t, "_")) {
        next();
        NodePtr sub = parse_subscript();
        if (p->kind == Kind::Symbol) {
          p = symbol_node(p->text + "_" + canonical(*sub));
        } else if (p->kind == Kind::Number) {
          // 204_5: a number in base 5, compared by its digits
        } else {
          p = make(Kind::Opaque, {p, sub}, "subscript");
        }
      } else if (is_char(t, "'")) {
        next();
        if (p->kind == Kind::Symbol) {
          p = symbol_node(p->text + "'");
        } else {
          p = make(Kind::Opaque, {p}, "prime");
        }
      } else if (is_char(t, "%") || is_cmd(t, "%")) {
        next();
        p = make(Kind::Percent, {p});
      } else {
        break;
      }
    }
    return p;
  }

  NodePtr letter_atom(const std::string& l) {
    if (l == "e") return make(Kind::Constant, {}, "e");
    return symbol_node(l);
  }

  NodePtr parse_bracketed(const std::string& open) {
    DepthGuard guard(depth_);
    bool several = false;
    std::vector<NodePtr> items = parse_sequence(several);
    std::string close;
    if (accept_char(")")) {
      close = ")";
    } else if (accept_char("]")) {
      close = "]";
    } else {
      throw ParseError("unclosed " + open);
    }
    if (items.size() == 1 && !several) {
      if (open == "(" && close == ")") return items[0];
      if (open == "[" && close == "]") return items[0];
      throw ParseError("mismatched brackets");
    }
    if (items.size() == 2 && !(open == "(" && close == ")")) {
      auto n = std::make_shared<Node>();
      n->kind = Kind::Interval;
      n->kids = items;
      n->left_closed = open == "[";
      n->right_closed = close == "]";
      return n;
    }
    auto n = std::make_shared<Node>();
    n->kind = Kind::Tuple;
    n->kids = items;
    n->parens = open == "(" && close == ")";
    return n;
  }

  NodePtr parse_matrix(const std::string& env) {
    if (env == "array" && accept_char("{")) {  // column spec
      int depth = 1;
      while (depth > 0 && peek().type != Tok::End) {
        const Token& t = next();
        if (is_char(t, "{")) ++depth;
        if (is_char(t, "}")) --depth;
      }
    }
    std::vector<std::vector<NodePtr>> rows(1);
    while (true) {
      if (is_cmd(peek(), "end")) {
        if (peek().arg != env) throw ParseError("\\end{" + peek().arg + "} closes \\begin{" + env + "}");
        next();
        break;
      }
      if (peek().type == Tok::End) throw ParseError("unclosed \\begin{" + env + "}");
      if (is_cmd(peek(), "hline")) {
        next();
        continue;
      }
      rows.back().push_back(parse_relation());
      if (accept_char("&")) continue;
      if (is_cmd(peek(), "\\")) {
        next();
        rows.emplace_back();
        continue;
      }
      if (!is_cmd(peek(), "end")) throw ParseError("unexpected '" + peek().text + "' in a matrix");
    }
    while (!rows.empty() && rows.back().empty()) rows.pop_back();
    if (rows.empty()) throw ParseError("empty matrix");
    const size_t cols = rows[0].size();
    std::vector<NodePtr> cells;
    for (const auto& r : rows) {
      if (r.size() != cols) throw ParseError("ragged matrix");
      cells.insert(cells.end(), r.begin(), r.end());
    }
    auto n = std::make_shared<Node>();
    n->kind = Kind::Matrix;
    n->kids = cells;
    n->rows = static_cast<int>(rows.size());
    n->cols = static_cast<int>(cols);
    return n;
  }

  // The argument of \sin, \log, ...: a bracket, a group, or the factors up to the next operator or function.
  NodePtr parse_function_argument() {
    if (is_char(peek(), "(")) {
      next();
      return parse_bracketed("(");
    }
    if (is_char(peek(), "{")) return parse_group_argument();
    std::vector<NodePtr> factors{parse_power()};
    while (starts_factor(peek()) && !(peek().type == Tok::Cmd && kFunctions.count(peek().text))) {
      factors.push_back(parse_power());
    }
    return factors.size() == 1 ? factors[0] : make(Kind::Mul, factors);
  }

  NodePtr parse_function(const std::string& name) {
    NodePtr power;
    NodePtr base;
    for (int k = 0; k < 2; ++k) {
      if (accept_char("^")) power = parse_exponent();
      if (accept_char("_")) base = parse_subscript();
    }
    std::vector<NodePtr> args;
    if ((name == "gcd" || name == "lcm" || name == "max" || name == "min") && is_char(peek(), "(")) {
      next();
      bool several = false;
      args = parse_sequence(several);
      expect_char(")");
    } else {
      NodePtr arg = parse_function_argument();
      if (arg->kind == Kind::Tuple && arg->parens) {
        args = arg->kids;
      } else {
        args = {arg};
      }
    }
    std::string fname = name;
    // \sin^{-1} x is arcsin x
    if (power && power->kind == Kind::Neg && power->kids[0]->kind == Kind::Number &&
        power->kids[0]->text == "1" && (name == "sin" || name == "cos" || name == "tan")) {
      fname = "a" + name;
      power = nullptr;
    }
    if (base) args.push_back(base);
    NodePtr f = make(Kind::Func, args, fname);
    return power ? make(Kind::Pow, {f, power}) : f;
  }

  NodePtr parse_big_operator(const std::string& name) {
    NodePtr lower = make(Kind::Text, {}, "");
    NodePtr upper = make(Kind::Text, {}, "");
    for (int k = 0; k < 2; ++k) {
      if (accept_char("_")) lower = parse_subscript();
      if (accept_char("^")) upper = parse_exponent();
    }
    NodePtr body = parse_function_argument();
    return make(Kind::Opaque, {lower, upper, body}, name);
  }

  NodePtr text_node(const std::string& raw) {
    std::string content = trim(raw);
    std::string compact;
    for (char c : content) {
      if (!is_space(c)) compact += c;
    }
    if (compact.empty()) throw ParseError("empty text");
    // \text{13} is the number; \text{(B)} the choice B.
    bool numeric = true;
    int dots = 0;
    for (char c : compact) {
      if (c == '.') ++dots;
      else if (!is_digit(c)) numeric = false;
    }
    if (numeric && dots <= 1 && compact != ".") return number_node(compact);
    if (compact.size() == 3 && compact[0] == '(' && compact[2] == ')' && is_letter(compact[1])) {
      return make(Kind::Text, {}, compact.substr(1, 1));
    }
    std::string collapsed;
    for (char c : content) {
      if (is_space(c)) {
        if (!collapsed.empty() && collapsed.back() != ' ') collapsed += ' ';
      } else {
        collapsed += c;
      }
    }
    return make(Kind::Text, {}, collapsed);
  }

  NodePtr parse_primary() {
    DepthGuard guard(depth_);
    const Token t = next();
    switch (t.type) {
      case Tok::End:
        throw ParseError("unexpected end");
      case Tok::Num:
        return number_node(t.text);
      case Tok::Letter:
        if (is_function_letter(t.text) && is_char(peek(), "(") && !peek().space_before) {
          next();
          bool several = false;
          std::vector<NodePtr> args = parse_sequence(several);
          expect_char(")");
          return make(Kind::Opaque, args, t.text);
        }
        return letter_atom(t.text);
      case Tok::Char:
        if (t.text == "(" || t.text == "[") return parse_bracketed(t.text);
        if (t.text == "{") {
          bool several = false;
          std::vector<NodePtr> items = parse_sequence(several);
          expect_char("}");
          return several ? make(Kind::Set, items) : items[0];
        }
        if (t.text == "|") {
          NodePtr inner = parse_expr();
          expect_char("|");
          return make(Kind::Func, {inner}, "abs");
        }
        throw ParseError("unexpected '" + t.text + "'");
      case Tok::Cmd:
        break;
    }
    const std::string& c = t.text;
    if (c == "frac") {
      NodePtr num = parse_group_argument();
      NodePtr den = parse_group_argument();
      return make(Kind::Div, {num, den});
    }
    if (c == "sqrt") {
      NodePtr index;
      if (accept_char("[")) {
        index = parse_expr();
        expect_char("]");
      }
      NodePtr radicand = parse_group_argument();
      if (index) return make(Kind::Func, {radicand, index}, "root");
      return make(Kind::Func, {radicand}, "sqrt");
    }
    if (c == "binom") {
      NodePtr n = parse_group_argument();
      NodePtr k = parse_group_argument();
      return make(Kind::Func, {n, k}, "binom");
    }
    if (c == "pi") return make(Kind::Constant, {}, "pi");
    if (c == "infty") return make(Kind::Constant, {}, "inf");
    if (c == "emptyset") return make(Kind::Set, {});
    if (c == "ldots") return make(Kind::Opaque, {}, "dots");
    if (c == "{") {
      if (is_cmd(peek(), "}")) {
        next();
        return make(Kind::Set, {});
      }
      bool several = false;
      std::vector<NodePtr> items = parse_sequence(several);
      if (!is_cmd(peek(), "}")) throw ParseError("unclosed \\{");
      next();
      return make(Kind::Set, items);
    }
    if (c == "text") return text_node(t.arg);
    if (c == "operatorname") {
      const std::string name = trim(t.arg);
      if (const auto it = kFunctions.find(name); it != kFunctions.end()) return parse_function(it->second);
      return parse_function(name);
    }
    if (kFunctions.count(c)) return parse_function(kFunctions.at(c));
    if (kGreek.count(c)) return symbol_node(c);
    if (c == "begin") {
      static const std::set<std::string, std::less<>> matrices = {
          "pmatrix", "bmatrix", "matrix", "Bmatrix", "vmatrix", "Vmatrix", "smallmatrix", "array"};
      if (!matrices.count(t.arg)) throw ParseError("\\begin{" + t.arg + "}");
      return parse_matrix(t.arg);
    }
    if (c == "lfloor" || c == "lceil") {
      NodePtr inner = parse_expr();
      if (!is_cmd(peek(), c == "lfloor" ? "rfloor" : "rceil")) throw ParseError("unclosed \\" + c);
      next();
      return make(Kind::Func, {inner}, c == "lfloor" ? "floor" : "ceil");
    }
    if (c == "sum" || c == "prod" || c == "int" || c == "iint" || c == "oint" || c == "lim" || c == "bigcup" ||
        c == "bigcap") {
      return parse_big_operator(c);
    }
    if (kRawArgCommands.count(c)) {
      // decorated names (\overline{AB}, \vec v, \mathbb{R}): one symbol each
      std::string compact;
      for (char ch : t.arg) {
        if (!is_space(ch)) compact += ch;
      }
      return symbol_node(c + "{" + compact + "}");
    }
    if (c == "angle" || c == "triangle" || c == "circ" || c == "prime") return symbol_node(c);
    throw ParseError("unknown command \\" + c);
  }
};

// a ± b becomes the set {a + b, a - b}; every ± in an item multiplies its alternatives.
std::vector<NodePtr> alternatives(const NodePtr& n, int& budget) {
  if (--budget < 0) throw ParseError("too many alternatives");
  if (n->kind == Kind::PlusMinus) {
    std::vector<NodePtr> out;
    if (n->kids.size() == 1) {
      for (const auto& x : alternatives(n->kids[0], budget)) {
        out.push_back(x);
        out.push_back(make(Kind::Neg, {x}));
      }
      return out;
    }
    for (const auto& a : alternatives(n->kids[0], budget)) {
      for (const auto& b : alternatives(n->kids[1], budget)) {
        out.push_back(make(Kind::Add, {a, b}));
        out.push_back(make(Kind::Add, {a, make(Kind::Neg, {b})}));
      }
    }
    return out;
  }
  // Collections keep their own ± inside (each element is expanded on its own).
  if (n->kind == Kind::Set || n->kind == Kind::List || n->kind == Kind::Tuple || n->kind == Kind::Interval ||
      n->kind == Kind::Matrix || n->kind == Kind::Relation || n->kind == Kind::SetOp) {
    return {n};
  }
  std::vector<std::vector<NodePtr>> options;
  bool any = false;
  for (const auto& k : n->kids) {
    options.push_back(alternatives(k, budget));
    any = any || options.back().size() > 1;
  }
  if (!any) return {n};
  std::vector<NodePtr> out;
  std::vector<size_t> idx(options.size(), 0);
  while (true) {
    auto copy = std::make_shared<Node>(*n);
    for (size_t k = 0; k < options.size(); ++k) copy->kids[k] = options[k][idx[k]];
    out.push_back(copy);
    if (out.size() > 64) throw ParseError("too many alternatives");
    size_t k = 0;
    while (k < idx.size() && ++idx[k] == options[k].size()) idx[k++] = 0;
    if (k == idx.size()) break;
  }
  return out;
}

NodePtr expand_plus_minus(const NodePtr& n, int& budget) {
  if (--budget < 0) throw ParseError("too large");
  switch (n->kind) {
    case Kind::Set:
    case Kind::List:
    case Kind::Tuple:
    case Kind::Interval:
    case Kind::Matrix:
    case Kind::Relation:
    case Kind::SetOp: {
      auto copy = std::make_shared<Node>(*n);
      copy->kids.clear();
      for (const auto& k : n->kids) {
        NodePtr e = expand_plus_minus(k, budget);
        // inside a set, the alternatives are elements of the set
        if ((n->kind == Kind::Set || n->kind == Kind::List) && e->kind == Kind::Set && k->kind != Kind::Set) {
          copy->kids.insert(copy->kids.end(), e->kids.begin(), e->kids.end());
        } else {
          copy->kids.push_back(e);
        }
      }
      return copy;
    }
    default: {
      auto alts = alternatives(n, budget);
      if (alts.size() == 1) return alts[0];
      return make(Kind::Set, alts);
    }
  }
}

void append_sorted(std::string& out, std::vector<std::string> parts, std::string_view sep) {
  std::sort(parts.begin(), parts.end());
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) out += sep;
    out += parts[k];
  }
}

std::string rel_text(RelOp op) {
  switch (op) {
    case RelOp::Eq: return "=";
    case RelOp::Ne: return "!=";
    case RelOp::Lt: return "<";
    case RelOp::Le: return "<=";
    case RelOp::Gt: return ">";
    case RelOp::Ge: return ">=";
    case RelOp::In: return "\\in";
  }
  return "?";
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex(uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string out(16, '0');
  for (int k = 15; k >= 0; --k, v >>= 4) out[k] = digits[v & 15];
  return out;
}

// An identifier GiNaC's parser accepts, distinct for distinct names.
std::string ginac_name(std::string_view prefix, std::string_view name) {
  std::string out(prefix);
  bool plain = true;
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      out += c;
    } else {
      out += '_';
      plain = false;
    }
  }
  if (!plain) out += "_" + hex(fnv1a(name));
  return out;
}

}  // namespace

NodePtr parse_answer(std::string_view cleaned) {
  if (cleaned.size() > 20000) throw ParseError("answer too long");
  // "(B)" alone is a multiple-choice letter, compared as text (any case)
  if (cleaned.size() == 3 && cleaned[0] == '(' && is_letter(cleaned[1]) && cleaned[2] == ')') {
    return make(Kind::Text, {}, std::string(1, cleaned[1]));
  }
  Parser parser(tokenize(cleaned));
  NodePtr tree = parser.parse_top();
  int budget = 100000;
  return expand_plus_minus(tree, budget);
}

std::string canonical(const Node& n) {
  auto kid = [&](size_t k) { return canonical(*n.kids[k]); };
  auto kids_in_order = [&](std::string_view sep) {
    std::string out;
    for (size_t k = 0; k < n.kids.size(); ++k) {
      if (k) out += sep;
      out += kid(k);
    }
    return out;
  };
  auto kids_sorted = [&](std::string_view sep, bool dedup) {
    std::vector<std::string> parts;
    for (size_t k = 0; k < n.kids.size(); ++k) parts.push_back(kid(k));
    if (dedup) {
      std::sort(parts.begin(), parts.end());
      parts.erase(std::unique(parts.begin(), parts.end()), parts.end());
    }
    std::string out;
    append_sorted(out, parts, sep);
    return out;
  };
  switch (n.kind) {
    case Kind::Number: return n.text;
    case Kind::Symbol: return n.text;
    case Kind::Constant: return n.text == "pi" ? "\\pi" : n.text == "inf" ? "\\infty" : n.text;
    case Kind::Add: return "(" + kids_sorted("+", false) + ")";
    case Kind::Mul: return "(" + kids_sorted("*", false) + ")";
    case Kind::Div: return "(" + kid(0) + ")/(" + kid(1) + ")";
    case Kind::Neg: return "-(" + kid(0) + ")";
    case Kind::Pow: return "(" + kid(0) + ")^(" + kid(1) + ")";
    case Kind::Func:
    case Kind::Opaque: return n.text + "(" + kids_in_order(",") + ")";
    case Kind::Percent: return kid(0) + "%";
    case Kind::PlusMinus: return n.kids.size() == 1 ? "\\pm(" + kid(0) + ")" : "(" + kid(0) + ")\\pm(" + kid(1) + ")";
    case Kind::Tuple: return "(" + kids_in_order(",") + ")";
    case Kind::Interval:
      return std::string(n.left_closed ? "[" : "(") + kid(0) + "," + kid(1) + (n.right_closed ? "]" : ")");
    case Kind::Set: return "\\{" + kids_sorted(",", true) + "\\}";
    case Kind::List: return kids_in_order(",");
    case Kind::SetOp: return n.text == "minus" ? kids_in_order("\\setminus") : kids_sorted("\\" + n.text, false);
    case Kind::Matrix: {
      std::string out = "\\begin{pmatrix}";
      for (int r = 0; r < n.rows; ++r) {
        if (r) out += "\\\\";
        for (int c = 0; c < n.cols; ++c) {
          if (c) out += "&";
          out += kid(static_cast<size_t>(r * n.cols + c));
        }
      }
      return out + "\\end{pmatrix}";
    }
    case Kind::Relation: {
      std::string out = kid(0);
      for (size_t k = 0; k < n.ops.size(); ++k) out += rel_text(n.ops[k]) + kid(k + 1);
      return out;
    }
    case Kind::Text: return "\\text{" + n.text + "}";
  }
  return "?";
}

bool has_free_parts(const Node& n) {
  if (n.kind == Kind::Symbol || n.kind == Kind::Text || n.kind == Kind::Opaque) return true;
  return std::any_of(n.kids.begin(), n.kids.end(), [](const NodePtr& k) { return has_free_parts(*k); });
}

std::string to_ginac(const Node& n) {
  auto kid = [&](size_t k) { return to_ginac(*n.kids[k]); };
  auto join = [&](std::string_view sep) {
    std::string out = "(";
    for (size_t k = 0; k < n.kids.size(); ++k) {
      if (k) out += sep;
      out += kid(k);
    }
    return out + ")";
  };
  switch (n.kind) {
    case Kind::Number: {
      const size_t dot = n.text.find('.');
      if (dot == std::string::npos) return n.text;
      // exact: 0.25 -> (25/100)
      std::string digits = n.text.substr(0, dot) + n.text.substr(dot + 1);
      const size_t nz = digits.find_first_not_of('0');
      digits = nz == std::string::npos ? "0" : digits.substr(nz);
      return "(" + digits + "/1" + std::string(n.text.size() - dot - 1, '0') + ")";
    }
    case Kind::Symbol: return n.text == "i" ? "I" : ginac_name("s_", n.text);
    case Kind::Constant:
      if (n.text == "pi") return "Pi";
      if (n.text == "e") return "exp(1)";
      throw ParseError("infinity in an expression");
    case Kind::Add: return join("+");
    case Kind::Mul: return join("*");
    case Kind::Div: return "((" + kid(0) + ")/(" + kid(1) + "))";
    case Kind::Neg: return "(-(" + kid(0) + "))";
    case Kind::Pow: return "((" + kid(0) + ")^(" + kid(1) + "))";
    case Kind::Percent: return "((" + kid(0) + ")/100)";
    case Kind::Func: {
      const std::string& f = n.text;
      if (f == "sqrt") return "sqrt(" + kid(0) + ")";
      if (f == "root") return "((" + kid(0) + ")^(1/(" + kid(1) + ")))";
      if (f == "sec") return "(1/cos(" + kid(0) + "))";
      if (f == "csc") return "(1/sin(" + kid(0) + "))";
      if (f == "cot") return "(1/tan(" + kid(0) + "))";
      if (f == "coth") return "(1/tanh(" + kid(0) + "))";
      if (f == "log" && n.kids.size() == 2) return "(log(" + kid(0) + ")/log(" + kid(1) + "))";
      if (f == "log10") return "(log(" + kid(0) + ")/log(10))";
      if (f == "binom") return "binomial(" + kid(0) + "," + kid(1) + ")";
      static const std::set<std::string, std::less<>> native = {"sin", "cos", "tan", "asin", "acos", "atan",
                                                                "sinh", "cosh", "tanh", "exp", "log", "abs",
                                                                "factorial"};
      if (native.count(f) && n.kids.size() == 1) return f + "(" + kid(0) + ")";
      return ginac_name("o_", canonical(n));
    }
    case Kind::Opaque: return ginac_name("o_", canonical(n));
    case Kind::Text: return ginac_name("t_", lower(n.text));
    default: throw ParseError("not an expression");
  }
}

std::vector<std::string> symbol_names(const Node& n) {
  std::set<std::string> names;
  std::function<void(const Node&)> walk = [&](const Node& m) {
    if (m.kind == Kind::Symbol) names.insert(m.text);
    for (const auto& k : m.kids) walk(*k);
  };
  walk(n);
  return {names.begin(), names.end()};
}

NodePtr rename_symbols(const NodePtr& n, const std::vector<std::pair<std::string, std::string>>& renames) {
  if (n->kind == Kind::Symbol) {
    for (const auto& [from, to] : renames) {
      if (n->text == from) return symbol_node(to);
    }
    return n;
  }
  if (n->kids.empty()) return n;
  auto copy = std::make_shared<Node>(*n);
  for (auto& k : copy->kids) k = rename_symbols(k, renames);
  return copy;
}

}  // namespace introspect::reward::math
