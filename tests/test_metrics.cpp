#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <sstream>

#include "introspect/io/metrics.h"
#include "test_util.h"

using introspect::io::MetricsWriter;
using introspect::testing::read_file;
using introspect::testing::ScratchDir;

namespace {
std::vector<nlohmann::json> read_lines(const std::filesystem::path& p) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_file(p));
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}
}  // namespace

TEST(MetricsWriter, OneFlushedJsonObjectPerStep) {
  ScratchDir dir;
  const auto path = dir.path() / "run" / "metrics.jsonl";
  MetricsWriter writer(path);
  writer.write(1, {{"reward/mean", 0.25}, {"lr", 1e-6}});
  // Flushed: readable while the writer is still open.
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_DOUBLE_EQ(lines[0]["reward/mean"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), 1e-6);
  writer.write(2, {{"reward/mean", 0.5}});
  lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["step"], 2);
}

TEST(MetricsWriter, NonFiniteValuesBecomeNull) {
  ScratchDir dir;
  const auto path = dir.path() / "m.jsonl";
  MetricsWriter writer(path);
  writer.write(3, {{"loss", std::nan("")}, {"kl", std::numeric_limits<double>::infinity()}, {"ok", 1.0}});
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(lines[0]["loss"].is_null());
  EXPECT_TRUE(lines[0]["kl"].is_null());
  EXPECT_EQ(lines[0]["ok"], 1.0);
}

TEST(MetricsWriter, AppendsAcrossWriters) {
  ScratchDir dir;
  const auto path = dir.path() / "m.jsonl";
  MetricsWriter(path).write(1, {{"a", 1}});
  MetricsWriter(path).write(2, {{"a", 2}});
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["a"], 2);
}

TEST(MetricsWriter, UnwritablePathIsAClearError) {
  try {
    MetricsWriter writer("/proc/introspect-no/m.jsonl");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/introspect-no"), std::string::npos) << e.what();
  }
}

#include "introspect/io/log.h"

TEST(Log, RunLogFileGetsDebugLinesTheConsoleDoesNot) {
  ScratchDir dir;
  const auto file = dir.path() / "run" / "introspect.log";
  introspect::log::init("warn", file);
  introspect::log::debug("debug detail ", 42);
  introspect::log::info("step ", 7, " done");  // info flushes the file
  const std::string text = read_file(file);
  EXPECT_NE(text.find("debug detail 42"), std::string::npos) << text;
  EXPECT_NE(text.find("[info] step 7 done"), std::string::npos) << text;
}
