// Datasets: every shared math file loads through its shipped config, answers come out of \boxed{} and "####",
// bad rows are errors with file:line or counted skips, and the epoch sampler is seeded and resumable.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "introspect/config/config.h"
#include "introspect/io/dataset.h"
#include "test_util.h"

using namespace introspect::io;
using introspect::testing::ScratchDir;
using ::testing::HasSubstr;

TEST(Dataset, EveryShippedDataConfigLoadsItsSharedFile) {
  const std::filesystem::path root = INTROSPECT_SOURCE_DIR;
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root / "configs" / "data")) {
    const auto cfg = introspect::config::load(entry.path());
    const std::string rel = cfg.data.train_path.empty() ? cfg.data.eval_path : cfg.data.train_path;
    DatasetOptions o{cfg.data.prompt_field, cfg.data.answer_field, cfg.data.answer_extract, cfg.data.prompt_template,
                     cfg.data.skip_malformed, ""};
    const auto d = Dataset::load(root / rel, o);
    if (!cfg.data.skip_malformed) {
      EXPECT_EQ(d.skipped, 0) << entry.path();
    }
    EXPECT_LE(d.skipped, 4) << entry.path();
    EXPECT_GE(d.problems.size(), 30u) << entry.path();
    for (const auto& p : d.problems) {
      EXPECT_FALSE(p.answer.empty()) << p.source;
      EXPECT_THAT(p.prompt, HasSubstr("within \\boxed{}")) << p.source;
    }
    ++files;
  }
  EXPECT_EQ(files, 11) << "one config per file of ../shared/data/math";
}

TEST(Dataset, AnswersFromSolutionsAndGsm8k) {
  const std::filesystem::path math = std::string(INTROSPECT_SHARED_DIR) + "/data/math";
  const auto gsm = Dataset::load(math / "gsm8k/test.jsonl", {"question", "answer", "gsm8k", "{problem}", false, ""});
  EXPECT_EQ(gsm.problems[0].answer, "18");  // Janet's ducks
  const auto full = Dataset::load(math / "math_full/test.jsonl", {"problem", "solution", "boxed", "{problem}", false, ""});
  EXPECT_EQ(full.problems.size(), 5000u);
  const auto m500 = Dataset::load(math / "math500/test.jsonl", {"problem", "solution", "boxed", "{problem}", false, ""});
  const auto given = Dataset::load(math / "math500/test.jsonl", {"problem", "answer", "none", "{problem}", false, ""});
  // The answer field of MATH500 is the last \boxed{} of its solution: the extractor must agree on (nearly) all.
  int same = 0;
  for (size_t i = 0; i < given.problems.size(); ++i) same += m500.problems[i].answer == given.problems[i].answer;
  EXPECT_GE(same, 490) << "of 500";
  const auto amc = Dataset::load(math / "amc23/test.jsonl", {"problem", "answer", "none", "{problem}", false, ""});
  EXPECT_EQ(amc.problems[0].answer, "27.0");
}

TEST(Dataset, LastBoxedBalancesBraces) {
  EXPECT_EQ(last_boxed("so \\boxed{\\frac{1}{2}} and then \\boxed{ \\{1,2\\} }").value(), " \\{1,2\\} ");
  EXPECT_EQ(last_boxed("\\fbox{7} is it").value(), "7");
  EXPECT_EQ(last_boxed("\\boxed {x^{2}}").value(), "x^{2}");
  EXPECT_FALSE(last_boxed("no box").has_value());
  EXPECT_FALSE(last_boxed("\\boxed{unbalanced").has_value());
}

TEST(Dataset, BadRowsNameFileLineAndFieldOrAreCountedSkips) {
  ScratchDir dir;
  const auto f = dir.write("d.jsonl", "{\"problem\": \"a\", \"answer\": \"1\"}\n\n{oops\n{\"problem\": \"b\"}\n");
  try {
    Dataset::load(f, {});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("d.jsonl:3: not valid JSON"));
  }
  const auto fixed = dir.write("e.jsonl", "{\"problem\": \"a\", \"answer\": \"1\"}\n{\"problem\": \"b\"}\n");
  try {
    Dataset::load(fixed, {});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("e.jsonl:2: missing or non-text answer field 'answer'"));
  }
  DatasetOptions skip;
  skip.skip_malformed = true;
  const auto d = Dataset::load(f, skip);
  EXPECT_EQ(d.problems.size(), 1u);
  EXPECT_EQ(d.skipped, 2);
  EXPECT_THROW(Dataset::load(dir.write("empty.jsonl", "\n"), {}), std::runtime_error);
  EXPECT_THROW(Dataset::load(dir.write("blank.jsonl", "{\"problem\": \"a\", \"answer\": \"  \"}\n"), {}),
               std::runtime_error);
  const auto arr = dir.write("a.json", "[{\"problem\": \"x\", \"answer\": 3}, {\"q\": 1}]");
  try {
    Dataset::load(arr, {});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("a.json:#1: missing or non-text prompt field 'problem'"));
  }
}

TEST(EpochSampler, SeededShufflePerEpochAndExactResume) {
  EpochSampler a(10, 7, true);
  const auto first = a.next(10);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 10u) << "an epoch visits every row once";
  const auto second = a.next(10);
  EXPECT_NE(first, second) << "each epoch reshuffles";
  const auto cursor = a.cursor();
  const auto more = a.next(13);
  EpochSampler b(10, 7, true);
  b.restore(cursor);
  EXPECT_EQ(b.next(13), more);
  EXPECT_EQ(EpochSampler(10, 7, true).next(25), [] { EpochSampler c(10, 7, true); return c.next(25); }());
  EXPECT_NE(EpochSampler(10, 8, true).next(10), first);
  EXPECT_EQ(EpochSampler(4, 1, false).next(6), (std::vector<int64_t>{0, 1, 2, 3, 0, 1}));
}
