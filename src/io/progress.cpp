#include "introspect/io/progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ostream>

namespace introspect::io {
namespace {

double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  }
  return buf;
}

constexpr double kBarRedrawSeconds = 0.1;

}  // namespace

Progress::Mode Progress::resolve_mode(const std::string& setting, int fd) {
  if (setting == "bar") return Mode::kBar;
  if (setting == "lines") return Mode::kLines;
  if (setting == "off") return Mode::kOff;
  return isatty(fd) ? Mode::kBar : Mode::kLines;
}

Progress::Progress(std::string label, int64_t total, Mode mode, double interval_s, std::ostream& out, Clock clock)
    : label_(std::move(label)), total_(total), mode_(mode), interval_s_(interval_s), out_(out),
      clock_(clock ? std::move(clock) : Clock(steady_seconds)) {
  start_ = last_draw_ = clock_();
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  done_ += n;
  maybe_draw(false);
}

void Progress::set_note(std::string note) { note_ = std::move(note); }

std::string Progress::render() const {
  const double elapsed = clock_() - start_;
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  char buf[160];
  std::string s = label_ + " " + std::to_string(done_);
  if (total_ > 0) {
    std::snprintf(buf, sizeof buf, "/%lld %5.1f%%", static_cast<long long>(total_),
                  100.0 * static_cast<double>(done_) / static_cast<double>(total_));
    s += buf;
  }
  std::snprintf(buf, sizeof buf, " %.2f it/s elapsed %s", rate, clock_text(elapsed).c_str());
  s += buf;
  if (total_ > 0 && rate > 0 && done_ < total_) {
    s += " ETA " + clock_text(static_cast<double>(total_ - done_) / rate);
  }
  if (!note_.empty()) s += " " + note_;
  return s;
}

void Progress::maybe_draw(bool force) {
  if (mode_ == Mode::kOff || finished_) return;
  const double now = clock_();
  const double wait = mode_ == Mode::kBar ? kBarRedrawSeconds : interval_s_;
  if (!force && now - last_draw_ < wait) return;
  last_draw_ = now;
  const std::string line = render();
  if (mode_ == Mode::kBar) {
    // Pad over the previous, possibly longer, line.
    out_ << '\r' << line << std::string(last_width_ > line.size() ? last_width_ - line.size() : 0, ' ');
    last_width_ = line.size();
  } else {
    out_ << line << '\n';
  }
  out_.flush();
}

void Progress::finish() {
  if (finished_) return;
  maybe_draw(true);
  if (mode_ == Mode::kBar) out_ << '\n' << std::flush;
  finished_ = true;
}

}  // namespace introspect::io
