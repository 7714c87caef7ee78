#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "introspect/config/config.h"
#include "test_util.h"

namespace cfg = introspect::config;
using introspect::testing::read_file;
using introspect::testing::run_command;
using introspect::testing::ScratchDir;
using ::testing::HasSubstr;

namespace {

// The issues of a load that must fail.
std::vector<cfg::ConfigIssue> load_errors(const std::filesystem::path& file, const std::vector<std::string>& ov = {}) {
  try {
    cfg::load(file, ov);
  } catch (const cfg::ConfigError& e) {
    return e.issues();
  }
  ADD_FAILURE() << "expected a ConfigError from " << file;
  return {};
}

std::vector<cfg::ConfigIssue> override_errors(const std::vector<std::string>& ov) {
  try {
    cfg::from_overrides(ov);
  } catch (const cfg::ConfigError& e) {
    return e.issues();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return {};
}

}  // namespace

TEST(ConfigLoad, DefaultsComeFromTheSchema) {
  const cfg::Config c;
  EXPECT_EQ(c.rollout.n, 8);
  EXPECT_DOUBLE_EQ(c.rollout.temperature, 1.0);
  EXPECT_EQ(c.algo.adv_estimator, "grpo");
  EXPECT_EQ(c.train.mode, "grpo");
}

TEST(ConfigLoad, ReadsEveryFieldKind) {
  ScratchDir dir;
  const auto file = dir.write("a.yaml", R"(
run:
  name: demo
  threads: 2
rollout:
  n: 16
  temperature: 0.7
  stop_token_ids: [151643, 151645]
  stop: ["</answer>", "\n\n\n"]
algo:
  loss_agg_mode: seq-mean-token-mean
  norm_adv_by_std: false
data:
  system_prompt:
)");
  const auto c = cfg::load(file);
  EXPECT_EQ(c.run.name, "demo");
  EXPECT_EQ(c.run.threads, 2);
  EXPECT_EQ(c.rollout.n, 16);
  EXPECT_DOUBLE_EQ(c.rollout.temperature, 0.7);
  EXPECT_EQ(c.rollout.stop_token_ids, (std::vector<int64_t>{151643, 151645}));
  EXPECT_EQ(c.rollout.stop, (std::vector<std::string>{"</answer>", "\n\n\n"}));
  EXPECT_EQ(c.algo.loss_agg_mode, "seq-mean-token-mean");
  EXPECT_FALSE(c.algo.norm_adv_by_std);
  EXPECT_EQ(c.data.system_prompt, "");
  EXPECT_EQ(c.train.lr, cfg::Config{}.train.lr) << "unset keys keep their defaults";
}

TEST(ConfigLoad, EmptyFileGivesDefaults) {
  ScratchDir dir;
  const auto c = cfg::load(dir.write("empty.yaml", "# nothing\n"));
  EXPECT_EQ(c.rollout.n, cfg::Config{}.rollout.n);
}

TEST(ConfigOverrides, DottedOverridesWinOverTheFile) {
  ScratchDir dir;
  const auto file = dir.write("a.yaml", "train:\n  lr: 1.0e-5\nrollout:\n  n: 4\n");
  const auto c = cfg::load(file, {"train.lr=1e-6", "rollout.n=16", "rollout.stop=[a, b]", "model.path=/m/x"});
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-6);
  EXPECT_EQ(c.rollout.n, 16);
  EXPECT_EQ(c.rollout.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.model.path, "/m/x");
}

TEST(ConfigOverrides, LaterOverrideWins) {
  const auto c = cfg::from_overrides({"rollout.n=2", "rollout.n=3"});
  EXPECT_EQ(c.rollout.n, 3);
}

TEST(ConfigOverrides, MalformedOverridesAreErrors) {
  auto issues = override_errors({"rollout.n"});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("key=value"));
  issues = override_errors({"rollout..n=3"});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("malformed key path"));
}

TEST(ConfigOverrides, UnknownOverrideKeySuggestsTheClosest) {
  const auto issues = override_errors({"rollout.temprature=0.5"});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].key, "rollout.temprature");
  EXPECT_THAT(issues[0].where, HasSubstr("override 'rollout.temprature=0.5'"));
  EXPECT_THAT(issues[0].message, HasSubstr("did you mean `rollout.temperature`?"));
}

TEST(ConfigOverrides, KeyInTheWrongSectionPointsToTheRightOne) {
  const auto issues = override_errors({"train.temperature=0.5"});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("did you mean `rollout.temperature`?"));
}

TEST(ConfigInheritance, BaseChainAppliesInOrder) {
  ScratchDir dir;
  dir.write("common/root.yaml", "rollout:\n  n: 4\n  temperature: 0.9\ntrain:\n  lr: 3.0e-6\n");
  dir.write("common/mid.yaml", "base: root.yaml\nrollout:\n  n: 8\n");
  const auto leaf = dir.write("exp/leaf.yaml", "base: ../common/mid.yaml\ntrain:\n  lr: 1.0e-6\n");
  const auto c = cfg::load(leaf);
  EXPECT_EQ(c.rollout.n, 8);                    // mid overrides root
  EXPECT_DOUBLE_EQ(c.rollout.temperature, 0.9);  // root survives
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-6);            // leaf overrides root
}

TEST(ConfigInheritance, CycleIsAnError) {
  ScratchDir dir;
  dir.write("a.yaml", "base: b.yaml\n");
  const auto b = dir.write("b.yaml", "base: a.yaml\n");
  const auto issues = load_errors(b);
  ASSERT_FALSE(issues.empty());
  EXPECT_THAT(issues[0].message, HasSubstr("inheritance cycle"));
}

TEST(ConfigInheritance, MissingBaseIsAnError) {
  ScratchDir dir;
  const auto issues = load_errors(dir.write("a.yaml", "base: nowhere.yaml\n"));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].key, "base");
  EXPECT_THAT(issues[0].message, HasSubstr("does not exist"));
}

TEST(ConfigInheritance, ErrorsInABaseNameTheBaseFile) {
  ScratchDir dir;
  dir.write("base.yaml", "rollout:\n  nn: 3\n");
  const auto issues = load_errors(dir.write("a.yaml", "base: base.yaml\n"));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].where, HasSubstr("base.yaml:2:3"));
  EXPECT_EQ(issues[0].key, "rollout.nn");
}

TEST(ConfigErrors, UnknownKeyGivesPathFileLineAndSuggestion) {
  ScratchDir dir;
  const auto file = dir.write("typo.yaml", "rollout:\n  n: 4\n  temprature: 0.6\n");
  const auto issues = load_errors(file);
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].key, "rollout.temprature");
  EXPECT_EQ(issues[0].where, file.string() + ":3:3");
  EXPECT_THAT(issues[0].message, HasSubstr("did you mean `rollout.temperature`?"));
}

TEST(ConfigErrors, UnknownSectionSuggestsASection) {
  ScratchDir dir;
  const auto issues = load_errors(dir.write("s.yaml", "rolout:\n  n: 4\n"));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("did you mean `rollout`?"));
}

TEST(ConfigErrors, FarFetchedKeyHasNoSuggestion) {
  ScratchDir dir;
  const auto issues = load_errors(dir.write("s.yaml", "rollout:\n  zzzzzzzzzz: 4\n"));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].message, "unknown key");
}

TEST(ConfigErrors, WrongTypesNameThePathAndTheExpectedType) {
  ScratchDir dir;
  const auto file = dir.write("types.yaml", R"(rollout:
  n: eight
  temperature: [1]
  stop_token_ids: [1, x]
algo:
  use_kl_loss: maybe
model: 3
)");
  const auto issues = load_errors(file);
  ASSERT_EQ(issues.size(), 5u);  // in schema order: run, log, model, data, rollout, algo, train
  EXPECT_EQ(issues[0].key, "model");
  EXPECT_EQ(issues[0].where, file.string() + ":7:8");
  EXPECT_THAT(issues[0].message, HasSubstr("expected a mapping"));
  EXPECT_EQ(issues[1].key, "rollout.n");
  EXPECT_EQ(issues[1].where, file.string() + ":2:6");
  EXPECT_THAT(issues[1].message, HasSubstr("expected an integer in >= 1, got 'eight'"));
  EXPECT_EQ(issues[2].key, "rollout.temperature");
  EXPECT_THAT(issues[2].message, HasSubstr("expected a number in >= 0, got a list"));
  EXPECT_EQ(issues[3].key, "rollout.stop_token_ids");
  EXPECT_THAT(issues[3].message, HasSubstr("got 'x'"));
  EXPECT_EQ(issues[4].key, "algo.use_kl_loss");
  EXPECT_THAT(issues[4].message, HasSubstr("expected a boolean"));
}

TEST(ConfigErrors, OutOfRangeValuesGiveTheRange) {
  auto issues = override_errors({"rollout.top_p=1.5", "algo.clip_ratio_c=1", "rollout.n=0", "train.lr=0"});
  ASSERT_EQ(issues.size(), 4u);
  EXPECT_EQ(issues[0].key, "rollout.top_p");
  EXPECT_THAT(issues[0].message, HasSubstr("expected a number in (0, 1], got '1.5'"));
  EXPECT_EQ(issues[1].key, "algo.clip_ratio_c");
  EXPECT_THAT(issues[1].message, HasSubstr("> 1"));
  EXPECT_EQ(issues[2].key, "rollout.n");
  EXPECT_THAT(issues[2].message, HasSubstr(">= 1"));
  EXPECT_EQ(issues[3].key, "train.lr");
}

TEST(ConfigErrors, FractionForAnIntegerIsAnError) {
  const auto issues = override_errors({"train.total_steps=2.5"});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("expected an integer"));
}

TEST(ConfigErrors, ChoiceListsTheOptionsAndSuggests) {
  const auto issues = override_errors({"algo.loss_agg_mode=token_mean"});
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("expected one of: token-mean, token-sum"));
  EXPECT_THAT(issues[0].message, HasSubstr("did you mean `token-mean`?"));
}

TEST(ConfigErrors, SyntaxErrorGivesFileAndLine) {
  ScratchDir dir;
  const auto file = dir.write("bad.yaml", "rollout:\n  n: [1, 2\n");
  const auto issues = load_errors(file);
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].where, HasSubstr(file.string() + ":"));
  EXPECT_THAT(issues[0].message, HasSubstr("YAML syntax error"));
}

TEST(ConfigErrors, TopLevelMustBeAMapping) {
  ScratchDir dir;
  const auto issues = load_errors(dir.write("list.yaml", "- 1\n- 2\n"));
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("mapping"));
}

TEST(ConfigErrors, AllProblemsAreReportedTogether) {
  ScratchDir dir;
  const auto issues = load_errors(dir.write("many.yaml", "rollout:\n  nn: 1\ntrain:\n  lr: -1\n"), {"x.y=1"});
  EXPECT_EQ(issues.size(), 3u);
}

TEST(ConfigErrors, MissingFileIsAnError) {
  const auto issues = load_errors("/nonexistent/config.yaml");
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_THAT(issues[0].message, HasSubstr("cannot open"));
}

TEST(ConfigYaml, ResolvedConfigRoundTrips) {
  ScratchDir dir;
  auto c = cfg::from_overrides({"rollout.temperature=0.123456789", "rollout.stop=['a: b', '\"q\"']",
                                "data.system_prompt='You are: helpful'", "train.lr=3e-7", "rollout.stop_token_ids=[7]"});
  const std::string yaml = cfg::to_yaml(c);
  const auto saved = dir.path() / "resolved.yaml";
  cfg::save_yaml(c, saved);
  EXPECT_EQ(read_file(saved), yaml);
  const auto back = cfg::load(saved);
  EXPECT_EQ(cfg::to_yaml(back), yaml);
  EXPECT_DOUBLE_EQ(back.rollout.temperature, 0.123456789);
  EXPECT_EQ(back.rollout.stop, (std::vector<std::string>{"a: b", "\"q\""}));
  EXPECT_EQ(back.data.system_prompt, "You are: helpful");
  EXPECT_DOUBLE_EQ(back.train.lr, 3e-7);
}

TEST(ConfigYaml, KeysListEverySectionAndField) {
  const auto keys = cfg::all_keys();
  EXPECT_THAT(keys, ::testing::Contains("rollout"));
  EXPECT_THAT(keys, ::testing::Contains("rollout.temperature"));
  EXPECT_THAT(keys, ::testing::Contains("train.lr"));
}

TEST(ConfigDocs, CheckedInReferenceIsCurrent) {
  const std::string path = std::string(INTROSPECT_SOURCE_DIR) + "/docs/config.md";
  EXPECT_EQ(read_file(path), cfg::reference_markdown())
      << "docs/config.md is stale: run `build/bin/introspect config docs --out docs/config.md`";
}

TEST(ConfigDocs, ReferenceDocumentsEveryKey) {
  const std::string md = cfg::reference_markdown();
  for (const auto& key : cfg::all_keys()) EXPECT_THAT(md, HasSubstr("`" + key + "`"));
}

TEST(ConfigShipped, EveryShippedConfigLoads) {
  int count = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(std::string(INTROSPECT_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    EXPECT_NO_THROW(cfg::load(entry.path())) << entry.path();
  }
  EXPECT_GT(count, 0);
}

TEST(ConfigCli, CheckPrintsTheResolvedConfig) {
  const auto r = run_command(std::string(INTROSPECT_BINARY) + " config check " + INTROSPECT_SOURCE_DIR +
                             "/configs/base.yaml rollout.n=5");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("n: 5"));
}

TEST(ConfigCli, MisspelledKeyExitsNonZeroWithSuggestion) {
  ScratchDir dir;
  const auto file = dir.write("typo.yaml", "rollout:\n  temprature: 0.6\n");
  const auto r = run_command(std::string(INTROSPECT_BINARY) + " config check " + file.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr(file.string() + ":2:3: rollout.temprature: unknown key; did you mean "
                                                   "`rollout.temperature`?"));
}

TEST(ConfigCli, BadOverrideExitsNonZero) {
  const auto r = run_command(std::string(INTROSPECT_BINARY) + " config check " + INTROSPECT_SOURCE_DIR +
                             "/configs/base.yaml rollout.n=-3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("rollout.n: expected an integer in >= 1, got '-3'"));
}

TEST(ConfigCli, VersionNamesLibTorch) {
  const auto r = run_command(std::string(INTROSPECT_BINARY) + " --version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("LibTorch 2."));
}
