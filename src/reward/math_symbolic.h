// Internal to the math verifier: symbolic checks with GiNaC, run in helper processes.
//
// GiNaC cannot be interrupted and is not thread-safe (its reference counts are plain integers shared through
// global constants), so it never runs in the caller's process. Each query goes to a helper process forked from
// the caller and kept in a pool: one helper per concurrent query, reused afterwards. When a query runs past its
// deadline the helper is killed (SIGKILL) and a fresh one forked for the next query, so a pathological
// expression costs the caller its deadline and nothing more. A helper also arms its own timer for every query,
// so one left behind by a crashed caller cannot spin for long, and it exits when the caller's end of its socket
// closes.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace introspect::reward::math {

enum class SymbolicOp : char {
  Equal = 'E',  // whether a == b: 1 or 0
  Ratio = 'R',  // the sign of a / b when it is a nonzero real constant (+1 / -1), else 0
};

// Runs one query in a helper process; nullopt when it did not finish by the deadline or the helper failed.
// `expand` allows expand()/normal() (the caller has checked the expansion stays small); without it only the
// cheap checks and the numeric probes run. Thread-safe.
std::optional<int> symbolic_query(SymbolicOp op, const std::string& a, const std::string& b, bool expand,
                                  std::chrono::steady_clock::time_point deadline);

// The query itself, in the calling process, unbounded in time: for the helper process and for tests.
int evaluate_symbolic(SymbolicOp op, const std::string& a, const std::string& b, bool expand);

}  // namespace introspect::reward::math
