// The built-in math verifier: answer extraction from model output, normalisation, and equivalence (numbers,
// fractions, radicals, percentages, units, tuples/intervals/sets/matrices, symbolic equality through GiNaC,
// `x=3` against `3`, multiple-choice letters). Every check is bounded in time.
//
// Thread-safety: every function here may be called from many threads at once. Parsing and comparison keep their
// state on the caller's stack; the symbolic checks run GiNaC (which is neither thread-safe nor interruptible) in
// helper processes forked on demand and pooled, one per concurrent check, killed and replaced when a check runs
// past its time limit.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace introspect::reward {

struct ExtractOptions {
  // auto: the last \boxed{}/\fbox{} or "the answer is x" (whichever comes later), else GSM8K's "#### x", else
  // the final $...$ (or \(...\), \[...\]) or, with number_fallback, the last plain number or a/b expression,
  // whichever comes later. The other modes use only that one rule.
  std::string mode = "auto";  // auto | boxed | gsm8k | answer_is | last_dollar | last_number
  bool ignore_think = true;   // drop everything up to the last </think> (and an unclosed <think> tail)
  // auto and answer_is: also take plain numbers ("1,000.5", "28 percent", "2/3") when no math is delimited
  // (math-verify's ExprExtractionConfig).
  bool number_fallback = true;
};

// The answer a response gives, or nullopt when it gives none. Several boxed answers close together
// ("\boxed{1} and \boxed{2}") come back as one set, "\{1, 2\}".
std::optional<std::string> extract_answer(std::string_view response, const ExtractOptions& options = {});

// A canonical text form of an answer, used to vote in maj@k: equal answers map to the same string as far as
// cheap normalisation can tell (spacing, \left/\right, \dfrac, trailing zeros, units, ...).
std::string normalize_answer(std::string_view answer);

struct VerifyOptions {
  double timeout_s = 2.0;   // for the whole check; past it the answer counts as not equal
  int float_rounding = 6;   // decimals compared when either side is a decimal number (math-verify's float_rounding)
  bool strict = true;       // false: variables are matched by position, so f(x) equals f(y)
  // Also compare a gold set (interval) with a predicted inequality; a predicted set is always compared with a
  // gold inequality (math-verify's allow_set_relation_comp).
  bool allow_set_relation_comp = false;
};

// Whether pred states the same answer as gold. Gives up (false) after timeout_s seconds of work.
bool answers_equal(std::string_view gold, std::string_view pred, double timeout_s = 2.0);
bool answers_equal(std::string_view gold, std::string_view pred, const VerifyOptions& options);

}  // namespace introspect::reward
