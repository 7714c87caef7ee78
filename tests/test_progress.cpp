#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "introspect/io/progress.h"

using introspect::io::Progress;
using ::testing::HasSubstr;

TEST(Progress, PipedOutputPrintsPeriodicPlainLines) {
  double now = 0;
  std::ostringstream out;
  {
    Progress p("rollout", 100, Progress::Mode::kLines, 10.0, out, [&] { return now; });
    for (int i = 0; i < 100; ++i) {
      now += 1.0;  // one item per second: a line every 10 items
      p.advance();
    }
    p.finish();
  }
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos) << "piped output must not redraw";
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 11) << text;  // 10 periodic + the final line
  EXPECT_THAT(text, HasSubstr("rollout 10/100  10.0% 1.00 it/s elapsed 0:10 ETA 1:30"));
  EXPECT_THAT(text, HasSubstr("rollout 100/100 100.0%"));
}

TEST(Progress, TerminalOutputRedrawsInPlace) {
  double now = 0;
  std::ostringstream out;
  Progress p("gen", 4, Progress::Mode::kBar, 30.0, out, [&] { return now; });
  for (int i = 0; i < 4; ++i) {
    now += 1.0;
    p.set_note("tok/s 42");
    p.advance();
  }
  p.finish();
  const std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 5);  // 4 redraws + the final one
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
  EXPECT_THAT(text, HasSubstr("gen 4/4 100.0% 1.00 it/s elapsed 0:04 tok/s 42"));
}

TEST(Progress, UnknownTotalShowsCountAndRateOnly) {
  double now = 0;
  std::ostringstream out;
  Progress p("steps", 0, Progress::Mode::kLines, 1.0, out, [&] { return now; });
  now = 4;
  p.advance(8);
  EXPECT_EQ(p.render(), "steps 8 2.00 it/s elapsed 0:04");
}

TEST(Progress, OffPrintsNothing) {
  std::ostringstream out;
  {
    Progress p("x", 10, Progress::Mode::kOff, 1.0, out);
    p.advance(10);
  }
  EXPECT_TRUE(out.str().empty());
}

TEST(Progress, AutoModeFollowsTheTerminal) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  EXPECT_EQ(Progress::resolve_mode("auto", fds[1]), Progress::Mode::kLines);
  EXPECT_EQ(Progress::resolve_mode("bar", fds[1]), Progress::Mode::kBar);
  EXPECT_EQ(Progress::resolve_mode("off", fds[1]), Progress::Mode::kOff);
  close(fds[0]);
  close(fds[1]);
}
