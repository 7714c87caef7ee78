// Symbolic checks with GiNaC, in helper processes (see math_symbolic.h).
#include "math_symbolic.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ginac/ginac.h>
#include <mutex>
#include <set>
#include <vector>

namespace introspect::reward::math {
namespace {

using Clock = std::chrono::steady_clock;

// ----------------------------------------------------------------------------------------------------------------
// The checks (helper side).

void collect_symbols(const GiNaC::ex& e, std::set<GiNaC::ex, GiNaC::ex_is_less>& out) {
  if (GiNaC::is_a<GiNaC::symbol>(e)) {
    out.insert(e);
    return;
  }
  for (size_t k = 0; k < e.nops(); ++k) collect_symbols(e.op(k), out);
}

// Deterministic probe values in [-2.75, -0.25] U [0.25, 2.75], away from 0 and small integers where
// denominators and logarithms tend to vanish.
double probe_value(int point, int symbol) {
  uint64_t z = static_cast<uint64_t>(point) * 0x9E3779B97F4A7C15ull +
               static_cast<uint64_t>(symbol + 1) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const double u = static_cast<double>(z >> 11) / static_cast<double>(1ull << 53);
  double v = 0.25 + 2.5 * u;
  if (std::abs(v - std::round(v)) < 0.05) v += 0.1;
  return ((point + symbol) % 3 == 0) ? -v : v;
}

std::optional<GiNaC::numeric> numeric_value(const GiNaC::ex& e, const GiNaC::exmap& at) {
  try {
    const GiNaC::ex v = GiNaC::evalf(at.empty() ? e : e.subs(at));
    if (!GiNaC::is_a<GiNaC::numeric>(v)) return std::nullopt;
    const auto n = GiNaC::ex_to<GiNaC::numeric>(v);
    const double mag = GiNaC::abs(n).to_double();
    if (!std::isfinite(mag)) return std::nullopt;
    return n;
  } catch (...) {
    return std::nullopt;
  }
}

bool close(const GiNaC::numeric& x, const GiNaC::numeric& y, double rel) {
  const double diff = GiNaC::abs(x - y).to_double();
  const double scale = std::max({1.0, GiNaC::abs(x).to_double(), GiNaC::abs(y).to_double()});
  return diff <= rel * scale;
}

constexpr double kProbeTolerance = 1e-9;
constexpr int kProbePoints = 8;
constexpr int kProbesNeeded = 3;

int check_equal(const GiNaC::ex& a, const GiNaC::ex& b, bool expand) {
  const GiNaC::ex d = a - b;
  if (d.is_zero()) return 1;
  std::set<GiNaC::ex, GiNaC::ex_is_less> syms;
  collect_symbols(a, syms);
  collect_symbols(b, syms);
  if (syms.empty()) {
    if (GiNaC::is_a<GiNaC::numeric>(d) && GiNaC::ex_to<GiNaC::numeric>(d).is_rational()) return 0;  // exact
    const auto x = numeric_value(a, {}), y = numeric_value(b, {});
    return x && y && close(*x, *y, 1e-12) ? 1 : 0;
  }
  if (expand) {
    const GiNaC::ex e = d.expand();
    if (e.is_zero()) return 1;
    GiNaC::lst vars;
    for (const auto& s : syms) vars.append(s);
    if (!e.is_polynomial(vars) && GiNaC::normal(e).is_zero()) return 1;
  }
  // Equal as functions: equal at every probe point where both sides have a value (this also proves identities
  // normal() does not, such as tan^2 + 1 = sec^2).
  int valid = 0;
  for (int point = 0; point < kProbePoints; ++point) {
    GiNaC::exmap at;
    int j = 0;
    for (const auto& s : syms) at[s] = GiNaC::numeric(probe_value(point, j++));
    const auto x = numeric_value(a, at), y = numeric_value(b, at);
    if (!x || !y) continue;
    if (!close(*x, *y, kProbeTolerance)) return 0;
    ++valid;
  }
  return valid >= kProbesNeeded ? 1 : 0;
}

int check_ratio(const GiNaC::ex& a, const GiNaC::ex& b, bool expand) {
  if (b.is_zero()) return 0;
  std::set<GiNaC::ex, GiNaC::ex_is_less> syms;
  collect_symbols(a, syms);
  collect_symbols(b, syms);
  if (expand) {
    try {
      const GiNaC::ex r = GiNaC::normal(a / b);
      if (GiNaC::is_a<GiNaC::numeric>(r)) {
        const auto n = GiNaC::ex_to<GiNaC::numeric>(r);
        if (n.is_real() && !n.is_zero()) return n.is_positive() ? 1 : -1;
        return 0;
      }
    } catch (...) {
    }
  }
  std::optional<GiNaC::numeric> first;
  int valid = 0;
  for (int point = 0; point < (syms.empty() ? 1 : kProbePoints); ++point) {
    GiNaC::exmap at;
    int j = 0;
    for (const auto& s : syms) at[s] = GiNaC::numeric(probe_value(point, j++));
    const auto x = numeric_value(a, at), y = numeric_value(b, at);
    if (!x || !y || y->is_zero()) continue;
    const GiNaC::numeric r = *x / *y;
    if (GiNaC::abs(r.imag()).to_double() > kProbeTolerance * std::max(1.0, GiNaC::abs(r).to_double())) return 0;
    const GiNaC::numeric real = r.real();
    if (GiNaC::abs(real).to_double() < 1e-12) return 0;
    if (first && !close(*first, real, kProbeTolerance)) return 0;
    if (!first) first = real;
    ++valid;
  }
  if (!first || valid < (syms.empty() ? 1 : kProbesNeeded)) return 0;
  return first->is_positive() ? 1 : -1;
}

// ----------------------------------------------------------------------------------------------------------------
// The helper process.

bool read_all(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool send_all(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

char answer_code(SymbolicOp op, int result) {
  if (op == SymbolicOp::Ratio) return result > 0 ? '+' : result < 0 ? '-' : '0';
  return result ? '1' : '0';
}

[[noreturn]] void helper_main(int fd) {
  // Payload: op, expand flag, the query's time limit in ms, '\n', a, '\n', b.
  while (true) {
    uint32_t len = 0;
    if (!read_all(fd, &len, sizeof len) || len > (16u << 20)) break;
    std::string payload(len, '\0');
    if (!read_all(fd, payload.data(), len)) break;
    char code = 'x';
    const size_t nl1 = payload.find('\n');
    const size_t nl2 = nl1 == std::string::npos ? std::string::npos : payload.find('\n', nl1 + 1);
    if (nl2 != std::string::npos && nl1 >= 3) {
      const auto op = static_cast<SymbolicOp>(payload[0]);
      const bool expand = payload[1] == '1';
      const long limit_ms = std::strtol(payload.c_str() + 2, nullptr, 10);
      // Our own deadline, a little after the caller's: SIGALRM's default action ends this process.
      itimerval timer{};
      const long ms = std::max(1L, limit_ms) + 1000;
      timer.it_value.tv_sec = ms / 1000;
      timer.it_value.tv_usec = (ms % 1000) * 1000;
      setitimer(ITIMER_REAL, &timer, nullptr);
      try {
        code = answer_code(op, evaluate_symbolic(op, payload.substr(nl1 + 1, nl2 - nl1 - 1),
                                                 payload.substr(nl2 + 1), expand));
      } catch (...) {
        code = 'x';
      }
      timer = itimerval{};
      setitimer(ITIMER_REAL, &timer, nullptr);
    }
    if (!send_all(fd, &code, 1)) break;
  }
  _exit(0);
}

struct Helper {
  pid_t pid = -1;
  int fd = -1;
};

void close_other_fds(int keep) {
  if (::close_range(static_cast<unsigned>(keep) + 1, ~0U, 0) == 0) return;
  const long max_fd = std::min(sysconf(_SC_OPEN_MAX), 65536L);
  for (long fd = keep + 1; fd < max_fd; ++fd) ::close(static_cast<int>(fd));
}

std::optional<Helper> spawn_helper() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return std::nullopt;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(sv[0]);
    ::close(sv[1]);
    return std::nullopt;
  }
  if (pid == 0) {
    // The child of a possibly multi-threaded caller: set up with plain system calls, then serve queries as a
    // single-threaded process. It holds only its socket (fd 3) and the standard streams.
    if (sv[1] != 3 && ::dup2(sv[1], 3) < 0) _exit(1);
    close_other_fds(3);
    const int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      if (devnull > 2) ::close(devnull);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGALRM, SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
    helper_main(3);
  }
  ::close(sv[1]);
  return Helper{pid, sv[0]};
}

void end_helper(const Helper& h) {
  ::kill(h.pid, SIGKILL);
  ::close(h.fd);
  while (::waitpid(h.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

// Idle helpers, shared by all threads. Helpers are forked on demand, so there are as many as the most queries
// ever in flight at once (up to kMaxIdle kept idle).
class HelperPool {
 public:
  ~HelperPool() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& h : idle_) end_helper(h);
    idle_.clear();
  }

  std::optional<Helper> take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        const Helper h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    return spawn_helper();
  }

  void give_back(const Helper& h) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < kMaxIdle) {
      idle_.push_back(h);
      return;
    }
    end_helper(h);
  }

 private:
  static constexpr size_t kMaxIdle = 32;
  std::mutex mu_;
  std::vector<Helper> idle_;
};

HelperPool& pool() {
  static HelperPool instance;
  return instance;
}

}  // namespace

int evaluate_symbolic(SymbolicOp op, const std::string& a, const std::string& b, bool expand) {
  GiNaC::parser reader;  // one reader: both sides share its symbols
  const GiNaC::ex ea = reader(a);
  const GiNaC::ex eb = reader(b);
  return op == SymbolicOp::Ratio ? check_ratio(ea, eb, expand) : check_equal(ea, eb, expand);
}

std::optional<int> symbolic_query(SymbolicOp op, const std::string& a, const std::string& b, bool expand,
                                  Clock::time_point deadline) {
  // Two tries: a helper may have died since it was last used (its own timer, a signal).
  for (int attempt = 0; attempt < 2; ++attempt) {
    const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left_ms <= 0) return std::nullopt;
    const auto helper = pool().take();
    if (!helper) return std::nullopt;
    std::string payload;
    payload += static_cast<char>(op);
    payload += expand ? '1' : '0';
    payload += std::to_string(left_ms) + "\n" + a + "\n" + b;
    const auto len = static_cast<uint32_t>(payload.size());
    if (!send_all(helper->fd, &len, sizeof len) || !send_all(helper->fd, payload.data(), payload.size())) {
      end_helper(*helper);
      continue;
    }
    pollfd pfd{helper->fd, POLLIN, 0};
    int ready = 0;
    while (true) {
      const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      ready = wait_ms <= 0 ? 0 : ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(wait_ms, 1 << 30)));
      if (ready < 0 && errno == EINTR) continue;
      break;
    }
    if (ready <= 0) {  // out of time: the helper cannot be interrupted, so it goes
      end_helper(*helper);
      return std::nullopt;
    }
    char code = 0;
    if (!read_all(helper->fd, &code, 1)) {
      end_helper(*helper);
      continue;
    }
    pool().give_back(*helper);
    switch (code) {
      case '1': return 1;
      case '0': return 0;
      case '+': return 1;
      case '-': return -1;
      default: return std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace introspect::reward::math
