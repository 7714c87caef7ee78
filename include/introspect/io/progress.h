// A progress display for long loops: count, rate and ETA. On a TTY it redraws one line in place; when the
// output is piped it prints a plain line every `interval_s` seconds, so CI logs stay readable.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace introspect::io {

class Progress {
 public:
  enum class Mode { kBar, kLines, kOff };
  using Clock = std::function<double()>;  // seconds, monotonic

  // "auto" picks kBar when `fd` is a terminal and kLines otherwise; "bar", "lines", "off" force a mode.
  static Mode resolve_mode(const std::string& setting, int fd);

  // `total` <= 0 means unknown (no percentage or ETA).
  Progress(std::string label, int64_t total, Mode mode, double interval_s, std::ostream& out, Clock clock = {});
  ~Progress();

  void advance(int64_t n = 1);
  void set_note(std::string note);  // shown after the counters, e.g. "loss 0.31"
  void finish();                    // final line; idempotent

  // "label 12/100 12.0% 3.4 it/s ETA 0:26 note", as shown.
  std::string render() const;

 private:
  void maybe_draw(bool force);

  std::string label_, note_;
  int64_t total_, done_ = 0;
  Mode mode_;
  double interval_s_, start_, last_draw_;
  std::ostream& out_;
  Clock clock_;
  bool finished_ = false;
  size_t last_width_ = 0;
};

}  // namespace introspect::io
