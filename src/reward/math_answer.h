// Internal to the math verifier: the parsed form of an answer and the text forms printed from it.
// Answers are cleaned (delimiters, \left/\right, spacing, units, degrees, percent words), then parsed by a small
// recursive-descent LaTeX parser into a tree. The tree is compared in math_verifier.cpp; expressions with
// variables are printed in GiNaC's syntax and checked by math_symbolic.cpp in a helper process.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace introspect::reward::math {

enum class Kind {
  Number,     // text: a plain decimal literal ("1234", "0.25"); is_float when written with a point
  Symbol,     // text: the name, with its subscript ("x", "a_{3}", "alpha")
  Constant,   // text: "pi", "e", "inf"
  Add,        // kids: terms
  Mul,        // kids: factors
  Div,        // kids: numerator, denominator
  Neg,        // kids: operand
  Pow,        // kids: base, exponent
  Func,       // text: sqrt, root (kids: radicand, index), sin, log (kids: x[, base]), abs, factorial, binom, ...
  Opaque,     // text: what it is (f, sum, int, ...); kids: its parts. Compared part by part, never evaluated
  Percent,    // kids: the number before the % sign
  PlusMinus,  // kids: a, b (a ± b); expanded into a Set before comparison
  Tuple,      // kids: elements; parens when written (a, b), which is also an open interval
  Interval,   // kids: lo, hi; left_closed / right_closed
  Set,        // kids: elements (\{...\}, several boxed answers, ±)
  List,       // kids: a bare comma or semicolon list "1, 2, 3"
  SetOp,      // text: cup, cap, minus; kids: operands
  Matrix,     // kids: rows*cols cells, row-major
  Relation,   // kids: operands; ops between them
  Text,       // text: \text{...} content, or a multiple-choice letter
};

enum class RelOp { Eq, Ne, Lt, Le, Gt, Ge, In };

struct Node;
using NodePtr = std::shared_ptr<const Node>;

struct Node {
  Kind kind;
  std::string text;
  std::vector<NodePtr> kids;
  std::vector<RelOp> ops;                           // Relation: ops[i] sits between kids[i] and kids[i+1]
  bool is_float = false;                            // Number written with a decimal point
  bool parens = false;                              // Tuple written with round brackets
  bool left_closed = false, right_closed = false;   // Interval
  int rows = 0, cols = 0;                           // Matrix
};

NodePtr make(Kind kind, std::vector<NodePtr> kids = {}, std::string text = {});

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The boxed answer(s) of a text: the content of the last \boxed{...} or \fbox{...} (balanced braces, or the
// token after "\boxed "), with the boxes just before it when they are close by or joined by "and"/","
// (several answers: returned as "\{a, b\}"). Empty when there is no box.
std::string boxed_content(std::string_view text);

// Cleans an answer for parsing: boxes, $ and \( \) delimiters, \left/\right, spacing commands, \dfrac and friends,
// degrees, percent words, units at the end, "and"/"or" between answers, thousands separators.
std::string clean_answer(std::string_view answer);

// Parses a cleaned answer; throws ParseError on what it cannot read (an unknown command, unbalanced brackets).
NodePtr parse_answer(std::string_view cleaned);

// A canonical text form: sums, products and sets in sorted order, numbers without trailing zeros. Two trees
// with the same canonical form are equal.
std::string canonical(const Node& node);

// Whether the tree holds a variable (a symbol, text, or an opaque part) anywhere.
bool has_free_parts(const Node& node);

// The expression in GiNaC's input syntax, with symbols renamed to s_... and opaque parts to o_<hash>; fails
// (ParseError) on sets, intervals, relations and matrices, which are compared structurally instead.
std::string to_ginac(const Node& node);

// Whether a tree names things rather than values: a symbol, a product or ratio of symbols, f(x), |AB|, (p, q).
// "x = 3" with such a left side is an assignment, and compares as its value.
bool only_symbols(const Node& node);

// The names of the symbols in a tree, sorted.
std::vector<std::string> symbol_names(const Node& node);

// A copy of the tree with symbols renamed (old name -> new name).
NodePtr rename_symbols(const NodePtr& node, const std::vector<std::pair<std::string, std::string>>& renames);

}  // namespace introspect::reward::math
