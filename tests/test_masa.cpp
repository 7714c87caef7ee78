// MASA's rules pinned to ../shared/research/masa.md: the worked example of 2.2, the edge cases of 6.2, both
// parsers of 1.3, gating (3.2), cutoff (3.3) and the expert-SFT target (3.5).
#include <gtest/gtest.h>

#include <cmath>

#include "introspect/config/schema.h"
#include "introspect/masa/masa.h"

namespace introspect::masa {
namespace {

using reward::SolutionEvidence;

MetaPrediction prediction(std::optional<int64_t> pass_rate, std::optional<int64_t> length,
                          std::optional<std::vector<std::string>> notions) {
  MetaPrediction p;
  p.parsed = true;
  if (pass_rate) p.pass_rate = static_cast<double>(*pass_rate) / 8.0;
  p.length = length;
  p.notions = std::move(notions);
  return p;
}

// Spec 2.2: G = 16, six correct with lengths {3100, 4200, 5000, 5200, 6000, 7900}; "Vieta's formula" in 5
// correct and 2 wrong texts, "discriminant" in 1 correct and 4 wrong.
SolutionEvidence worked_example() {
  SolutionEvidence e;
  e.problem = "Let r and s be the roots of x^2 - 5x + 6 = 0. Find r^2 + s^2.";
  const std::vector<int64_t> correct_lengths{3100, 4200, 5000, 5200, 6000, 7900};
  for (int i = 0; i < 16; ++i) {
    const bool correct = i < 6;
    std::string text = "work ";
    if (correct && i < 5) text += "by Vieta's formula ";
    if (!correct && i < 8) text += "Vieta's formula again ";
    if (correct && i == 5) text += "the discriminant ";
    if (!correct && i >= 8 && i < 12) text += "discriminant is ";
    e.texts.push_back(text);
    e.correct.push_back(correct);
    e.lengths.push_back(correct ? correct_lengths[static_cast<size_t>(i)] : 8192);
  }
  return e;
}

TEST(Masa, WorkedExampleOfTheSpec) {
  const auto e = worked_example();
  const auto p = prediction(3, 4500, std::vector<std::string>{"Vieta's formulas", "discriminant"});
  const auto s = score_meta(p, e.problem, e, RewardOptions{});
  EXPECT_DOUBLE_EQ(s.difficulty, 1.0);  // p = 6/16 = 0.375 = 3/8
  EXPECT_DOUBLE_EQ(s.length, 1.0);      // 4500 in (3100, 7900)
  EXPECT_DOUBLE_EQ(s.notion, 0.5);      // "Vieta's formula" net +3, "discriminant" net -3
  EXPECT_NEAR(s.total(), 2.5 / 3.0, 1e-12);
  EXPECT_NEAR(s.total(), 0.833, 5e-4);
}

TEST(Masa, DifficultyRewardHalvesPerBucket) {
  const auto e = worked_example();  // p = 3/8
  const RewardOptions o;
  EXPECT_NEAR(score_meta(prediction(4, {}, {}), "", e, o).difficulty, 0.562, 5e-4);  // one bucket
  EXPECT_NEAR(score_meta(prediction(5, {}, {}), "", e, o).difficulty, 0.316, 5e-4);  // two
  EXPECT_NEAR(score_meta(prediction(7, {}, {}), "", e, o).difficulty, 0.1, 1e-12);   // four
  RewardOptions b02;
  b02.difficulty_base = 0.02;
  EXPECT_NEAR(score_meta(prediction(4, {}, {}), "", e, b02).difficulty, std::pow(0.02, 0.125), 1e-12);
}

TEST(Masa, NoCorrectRolloutRewardsOnlyPredictingZero) {
  SolutionEvidence e;
  e.problem = "hard";
  for (int i = 0; i < 4; ++i) e.texts.push_back("Vieta"), e.correct.push_back(false), e.lengths.push_back(100);
  const auto zero = score_meta(prediction(0, 100, std::vector<std::string>{"Vieta"}), e.problem, e, {});
  EXPECT_DOUBLE_EQ(zero.difficulty, 1.0);
  EXPECT_DOUBLE_EQ(zero.length, 0.0);  // no correct range
  EXPECT_DOUBLE_EQ(zero.notion, 0.0);  // no count can be positive
  EXPECT_DOUBLE_EQ(zero.total(), 1.0 / 3.0);
  EXPECT_NEAR(score_meta(prediction(8, 100, {}), e.problem, e, {}).difficulty, 0.01, 1e-12);
  EXPECT_FALSE(expert_target(prediction(0, 100, {}), e, false).has_value());
  // masa.expert_sft.unsolved=zero: the true pass rate 0, and the prediction's own length (there is no true one).
  const std::pair<int64_t, int64_t> range{100, 8192};
  EXPECT_EQ(expert_target(prediction(6, 120, {}), e, false, range),
            "<meta></meta>\n{\"math_notion\":[],\"pass_rate\":0,\"solution_length\":120}");
  // Strict parsing keeps a length as written; the target clamps it into the range as tolerant parsing would.
  EXPECT_EQ(expert_target(prediction(6, 99999, {}), e, false, range),
            "<meta></meta>\n{\"math_notion\":[],\"pass_rate\":0,\"solution_length\":8192}");
  EXPECT_EQ(expert_target(prediction(6, 3, {}), e, false, range),
            "<meta></meta>\n{\"math_notion\":[],\"pass_rate\":0,\"solution_length\":100}");
  EXPECT_FALSE(expert_target(prediction(6, {}, {}), e, false, range).has_value());
  EXPECT_FALSE(expert_target(prediction(6, 120, {}), SolutionEvidence{}, false, range).has_value());  // no rollouts
}

TEST(Masa, ExactlyOneCorrectRolloutInclusiveAgainstStrictBounds) {
  SolutionEvidence e;
  for (int i = 0; i < 4; ++i) e.texts.push_back("x"), e.correct.push_back(i == 0), e.lengths.push_back(i == 0 ? 500 : 900);
  const auto p = prediction(2, 500, {});
  RewardOptions inclusive, strict;
  strict.strict_length = true;
  EXPECT_DOUBLE_EQ(score_meta(p, "", e, inclusive).length, 1.0);
  EXPECT_DOUBLE_EQ(score_meta(p, "", e, strict).length, 0.0);  // min == max: never strictly inside
  EXPECT_DOUBLE_EQ(score_meta(p, "", e, inclusive).difficulty, 1.0);
  EXPECT_DOUBLE_EQ(score_meta(prediction(2, 499, {}), "", e, inclusive).length, 0.0);
}

TEST(Masa, AllCorrect) {
  SolutionEvidence e;
  e.problem = "easy";
  const std::vector<int64_t> lengths{300, 400, 350};
  for (auto l : lengths) e.texts.push_back("uses induction"), e.correct.push_back(true), e.lengths.push_back(l);
  const auto s = score_meta(prediction(8, 300, std::vector<std::string>{"induction"}), e.problem, e, {});
  EXPECT_DOUBLE_EQ(s.difficulty, 1.0);
  EXPECT_DOUBLE_EQ(s.length, 1.0);
  EXPECT_DOUBLE_EQ(s.notion, 1.0);
  const auto t = expert_target(prediction(5, 9999, std::vector<std::string>{"induction"}), e, false);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "<meta></meta>\n{\"math_notion\":[\"induction\"],\"pass_rate\":8,\"solution_length\":350}");
}

TEST(Masa, ParseFailureScoresZero) {
  const auto e = worked_example();
  for (bool strict : {false, true}) {
    ParseOptions o;
    o.strict = strict;
    const auto p = parse_meta("<meta>I think it is easy</meta> pass rate about 8", o);
    EXPECT_FALSE(p.parsed);
    EXPECT_FALSE(p.pass_rate || p.length || p.notions);
    EXPECT_DOUBLE_EQ(score_meta(p, e.problem, e, {}).total(), 0.0);
    // truncated before the JSON closes
    EXPECT_FALSE(parse_meta("<meta>ok</meta>{\"math_notion\": [\"a\"], \"pass_rate\": 3", o).pass_rate);
  }
}

TEST(Masa, OutOfRangeValuesClampWhenTolerantAndStayRawWhenStrict) {
  const std::string text = "<meta>r</meta>{\"math_notion\":[\"x\"],\"pass_rate\":11,\"solution_length\":20}";
  ParseOptions tolerant;
  tolerant.min_length = 128;
  tolerant.max_length = 8192;
  const auto t = parse_meta(text, tolerant);
  ASSERT_TRUE(t.pass_rate && t.length);
  EXPECT_DOUBLE_EQ(*t.pass_rate, 1.0);
  EXPECT_EQ(*t.length, 128);
  ParseOptions strict = tolerant;
  strict.strict = true;
  const auto s = parse_meta(text, strict);
  ASSERT_TRUE(s.pass_rate && s.length);
  EXPECT_DOUBLE_EQ(*s.pass_rate, 11.0 / 8.0);  // the official code has no clamp
  EXPECT_EQ(*s.length, 20);
  // negative and huge lengths, a float pass rate
  const auto f = parse_meta("{\"pass_rate\": 2.6, \"solution_length\": 1e9}", tolerant);
  EXPECT_DOUBLE_EQ(*f.pass_rate, 3.0 / 8.0);
  EXPECT_EQ(*f.length, 8192);
  EXPECT_FALSE(parse_meta("{\"math_notion\":[],\"pass_rate\":2.5}", strict).pass_rate);  // not an int
}

TEST(Masa, TolerantParserTakesTheLastBalancedObjectInAnyKeyOrder) {
  ParseOptions o;
  o.min_length = 1;
  const std::string text =
      "<meta>a {draft} with \"pass_rate\": 1 and {\"pass_rate\": 2}</meta>\n"
      "first {\"pass_rate\": 5}\n"
      "final:\n{\n  \"solution_length\": 640,\n  \"pass_rate\": \"6\",\n  \"math_notion\": [\"AM-GM }\", 3, \"parity\"]\n}\n"
      "trailing words";
  const auto p = parse_meta(text, o);
  ASSERT_TRUE(p.parsed);
  EXPECT_DOUBLE_EQ(*p.pass_rate, 6.0 / 8.0);
  EXPECT_EQ(*p.length, 640);
  EXPECT_EQ(*p.notions, (std::vector<std::string>{"AM-GM }", "parity"}));  // non-strings skipped
  EXPECT_EQ(p.reasoning, "a {draft} with \"pass_rate\": 1 and {\"pass_rate\": 2}");
}

TEST(Masa, StrictParserNeedsTheCompactNotionFirstObject) {
  ParseOptions strict;
  strict.strict = true;
  const auto ok = parse_meta(
      "<meta>m</meta>{\"math_notion\": [\"a\"], \"pass_rate\": 2, \"solution_length\": 900} "
      "{\"math_notion\": [\"b\"], \"pass_rate\": 4, \"solution_length\": 1000}",
      strict);
  ASSERT_TRUE(ok.pass_rate);
  EXPECT_DOUBLE_EQ(*ok.pass_rate, 0.5);  // the last match
  EXPECT_EQ(*ok.length, 1000);
  // pretty-printed or re-ordered: the regex misses; the fallback never yields a pass rate
  EXPECT_FALSE(parse_meta("{\n \"math_notion\": [\"a\"], \"pass_rate\": 2}", strict).pass_rate);
  EXPECT_FALSE(parse_meta("{\"pass_rate\": 2, \"math_notion\": [\"a\"]}", strict).pass_rate);
  // single quotes match the regex but are not JSON; the unquoted-key fallback reads only the notions
  const auto fb = parse_meta("{'math_notion': ['a']} and math_notion: [\"parity\", \"sum\"]", strict);
  EXPECT_FALSE(fb.parsed);
  EXPECT_FALSE(fb.pass_rate);
  ASSERT_TRUE(fb.notions);
  EXPECT_EQ(*fb.notions, (std::vector<std::string>{"parity", "sum"}));
  // the tolerant parser reads all of them
  EXPECT_TRUE(parse_meta("{\"pass_rate\": 2, \"math_notion\": [\"a\"]}", ParseOptions{}).pass_rate);
}

TEST(Masa, NotionStringsSplitOnCommas) {
  ParseOptions o;
  const auto p = parse_meta("{\"math_notion\": \"[modular arithmetic, primes]\"}", o);
  EXPECT_EQ(*p.notions, (std::vector<std::string>{"modular arithmetic", "primes"}));
  EXPECT_EQ(*parse_meta("{\"math_notion\": \"parity\"}", o).notions, std::vector<std::string>{"parity"});
}

TEST(Masa, Singularize) {
  EXPECT_EQ(singularize("Vieta's formulas"), "Vieta's formula");
  EXPECT_EQ(singularize("probabilities"), "probability");
  EXPECT_EQ(singularize("matches"), "match");
  EXPECT_EQ(singularize("boxes"), "box");
  EXPECT_EQ(singularize("geometric series"), "geometric series");
  EXPECT_EQ(singularize("class"), "class");
  EXPECT_EQ(singularize("Primes"), "Prime");
  EXPECT_EQ(singularize("induction"), "induction");
}

TEST(Masa, NotionScoreExcludesTheProblemsOwnWordsAndCountsPresenceOnce) {
  SolutionEvidence e;
  e.problem = "Find the number of primes below 30.";
  e.texts = {"sieve sieve sieve", "sieve", "parity", "parity and sieve"};
  e.correct = {true, false, false, true};
  e.lengths = {10, 10, 10, 10};
  // "primes" -> "prime" is in the problem: excluded. "sieve": 2 correct - 1 wrong = +1 (the triple counts once).
  // "parity": 1 correct - 1 wrong = 0. Duplicates collapse.
  EXPECT_DOUBLE_EQ(notion_score({"primes", "sieve", "sieves", "parity"}, e.problem, e), 0.5);
  EXPECT_DOUBLE_EQ(notion_score({"primes"}, e.problem, e), 0.0);  // all excluded: empty
  EXPECT_DOUBLE_EQ(notion_score({}, e.problem, e), 0.0);
  EXPECT_DOUBLE_EQ(notion_score({"Sieve"}, e.problem, e), 0.0);   // case-sensitive
}

TEST(Masa, GatingNeedsAgreementOnZeroOrOneAndEnoughValidPredictions) {
  auto preds = [](std::vector<std::optional<int64_t>> rates) {
    std::vector<MetaPrediction> out;
    for (auto r : rates) out.push_back(prediction(r, {}, {}));
    return out;
  };
  const GateOptions o;  // sigma 0.1, half valid, rounded
  const auto all_zero = gate(preds({0, 0, 0, 0}), o);
  EXPECT_TRUE(all_zero.gated);
  EXPECT_FALSE(all_zero.predicted_solved);
  const auto all_eight = gate(preds({8, 8, 8, 8}), o);
  EXPECT_TRUE(all_eight.gated && all_eight.predicted_solved);
  EXPECT_FALSE(gate(preds({4, 4, 4, 4}), o).gated);     // confident, but not zero-variance
  EXPECT_FALSE(gate(preds({0, 0, 0, 8}), o).gated);     // disagreement: std 0.43
  const auto near = gate(preds({8, 8, 8, 7}), o);        // std 0.054, mean 7.75/8 rounds to 8
  EXPECT_TRUE(near.gated);
  EXPECT_NEAR(near.std, std::sqrt(3.0) / 32.0, 1e-12);
  EXPECT_FALSE(gate(preds({8, {}, {}, {}}), o).gated);  // unparseable predictions never gate
  EXPECT_TRUE(gate(preds({8, 8, {}, {}}), o).gated);
  EXPECT_FALSE(gate(preds({{}, {}}), {0.1, 0.0}).gated);
  // masa.gate_rule=literal: the mean itself must be 0 or 1, so one 7/8 among the 8/8s keeps the prompt.
  const GateOptions literal{0.1, 0.5, GateRule::kLiteral};
  EXPECT_FALSE(gate(preds({8, 8, 8, 7}), literal).gated);
  EXPECT_FALSE(gate(preds({0, 0, 0, 1}), literal).gated);
  EXPECT_TRUE(gate(preds({0, 0, 0, 0}), literal).gated);
  const auto literal_eight = gate(preds({8, 8, {}, 8}), literal);
  EXPECT_TRUE(literal_eight.gated && literal_eight.predicted_solved);
}

// A pass_rate written outside 0..8 is scored (clamped) but is not a confident prediction for the gate unless
// masa.gate_out_of_range: a toy policy drifted to "pass_rate": 45 on problems it solved 6 times in 8.
TEST(Masa, GateIgnoresPassRatesWrittenOutsideTheScale) {
  const ParseOptions tolerant;
  const auto written = [&](const std::string& rate) {
    return parse_meta("<meta></meta>{\"math_notion\":[],\"pass_rate\":" + rate + "}", tolerant);
  };
  EXPECT_DOUBLE_EQ(*written("45").pass_rate, 1.0);  // the reward still sees it clamped
  EXPECT_TRUE(written("45").pass_rate_out_of_range);
  EXPECT_TRUE(written("-2").pass_rate_out_of_range);
  EXPECT_FALSE(written("8").pass_rate_out_of_range);
  EXPECT_FALSE(written("0").pass_rate_out_of_range);
  ParseOptions strict;
  strict.strict = true;
  const auto raw = parse_meta("{\"math_notion\":[\"x\"],\"pass_rate\":9}", strict);
  EXPECT_DOUBLE_EQ(*raw.pass_rate, 9.0 / 8.0);
  EXPECT_TRUE(raw.pass_rate_out_of_range);

  const std::vector<MetaPrediction> drifted(4, written("45"));
  EXPECT_FALSE(gate(drifted, GateOptions{}).gated);
  EXPECT_EQ(gate(drifted, GateOptions{}).valid, 0);
  GateOptions trusting;
  trusting.trust_out_of_range = true;
  EXPECT_TRUE(gate(drifted, trusting).predicted_solved);
  // Half in range agree on 8/8: enough valid predictions (0.5 of 4), so the prompt is gated on those alone.
  auto mixed = drifted;
  mixed[0] = mixed[1] = written("8");
  EXPECT_TRUE(gate(mixed, GateOptions{}).gated);
  mixed[1] = written("0");
  EXPECT_FALSE(gate(mixed, GateOptions{}).gated);
  // An unclamped 9/8 (strict parsing): trusted, rounded counts it as 8 and literal does not.
  const std::vector<MetaPrediction> nines(4, raw);
  EXPECT_FALSE(gate(nines, GateOptions{}).gated);
  EXPECT_TRUE(gate(nines, trusting).gated);
  trusting.rule = GateRule::kLiteral;
  EXPECT_FALSE(gate(nines, trusting).gated);

  config::MasaConfig c;
  EXPECT_FALSE(gate_options(c).trust_out_of_range);
  c.gate_out_of_range = true, c.gate_rule = "literal", c.gate_sigma = 0.05;
  const auto from_config = gate_options(c);
  EXPECT_TRUE(from_config.trust_out_of_range);
  EXPECT_EQ(from_config.rule, GateRule::kLiteral);
  EXPECT_DOUBLE_EQ(from_config.sigma, 0.05);
}

// masa.gate_min_precision: each side of the gate is judged on its own last `window` checked verdicts, once a
// quarter of the window is in; a side that becomes right again comes back.
TEST(Masa, GateCheckStopsTheSideThatIsWrongAndBringsItBack) {
  GateCheck check;
  check.min_precision = 0.8, check.window = 8;
  EXPECT_FALSE(check.suspended(true));  // nothing checked yet: the spec's gate
  EXPECT_FALSE(check.precision(true).has_value());
  check.add(true, false);
  EXPECT_FALSE(check.suspended(true));  // 1 verdict: under a quarter of the window
  check.add(true, true);
  EXPECT_DOUBLE_EQ(*check.precision(true), 0.5);
  EXPECT_TRUE(check.suspended(true));
  EXPECT_FALSE(check.suspended(false));  // the other side keeps gating
  for (int i = 0; i < 6; ++i) check.add(false, true);
  EXPECT_DOUBLE_EQ(*check.precision(false), 1.0);
  EXPECT_FALSE(check.suspended(false));
  // Right verdicts push the wrong one out of the window: 7 of 8 right passes 0.8, 6 of 8 does not.
  for (int i = 0; i < 5; ++i) check.add(true, true);
  EXPECT_DOUBLE_EQ(*check.precision(true), 6.0 / 7.0);
  EXPECT_FALSE(check.suspended(true));
  check.add(true, false);
  EXPECT_EQ(check.solved.size(), 8u);
  EXPECT_DOUBLE_EQ(*check.precision(true), 6.0 / 8.0);
  EXPECT_TRUE(check.suspended(true));
  for (int i = 0; i < 7; ++i) check.add(true, true);
  EXPECT_EQ(check.solved.size(), 8u);
  EXPECT_DOUBLE_EQ(*check.precision(true), 7.0 / 8.0);
  EXPECT_FALSE(check.suspended(true));
  check.min_precision = 0;  // off: never stops, whatever it saw
  check.add(true, false), check.add(true, false);
  EXPECT_FALSE(check.suspended(true));
}

TEST(Masa, CutoffScalesTheMeanPredictedLengthWithinBounds) {
  std::vector<MetaPrediction> p{prediction({}, 1000, {}), prediction({}, 2001, {}), prediction({}, {}, {})};
  EXPECT_EQ(cutoff_tokens(p, 2.0, 128, 8192), 3001);  // ceil(2 * 1500.5)
  EXPECT_EQ(cutoff_tokens(p, 10.0, 128, 8192), 8192);
  EXPECT_EQ(cutoff_tokens(p, 0.05, 128, 8192), 128);
  EXPECT_EQ(cutoff_tokens(p, 0.0, 128, 8192), 8192);  // cutoff off
  EXPECT_EQ(cutoff_tokens({prediction(3, {}, {})}, 2.0, 128, 8192), 8192);  // no length: the global limit
}

TEST(Masa, ExpertTargetCorrectsThePredictionAndParsesStrictly) {
  auto e = worked_example();
  MetaPrediction p = prediction(8, 100, std::vector<std::string>{"Vieta's formulas"});
  p.reasoning = "sum and product of roots";
  const auto t = expert_target(p, e, false);
  ASSERT_TRUE(t.has_value());
  // p = 6/16 -> 3 of 8; median of {3100, 4200, 5000, 5200, 6000, 7900} = 5100
  EXPECT_EQ(*t, "<meta>sum and product of roots</meta>\n"
                "{\"math_notion\":[\"Vieta's formulas\"],\"pass_rate\":3,\"solution_length\":5100}");
  EXPECT_EQ(*expert_target(p, e, true), "<meta>sum and product of roots</meta>\n"
                                          "{\"math_notion\":[\"Vieta's formulas\"],\"pass_rate\":3,\"solution_length\":5500}");
  ParseOptions strict;
  strict.strict = true;
  const auto back = parse_meta(*t, strict);
  ASSERT_TRUE(back.pass_rate && back.length);
  EXPECT_DOUBLE_EQ(*back.pass_rate, 3.0 / 8.0);
  EXPECT_EQ(back.reasoning, "sum and product of roots");
}

TEST(Masa, MetaPromptFillsTheMaxResponseLength) {
  config::MasaConfig c;
  const auto msg = meta_user_message(c.meta_prompt, "What is {x}? Let's think step by step.", 128, 8192);
  EXPECT_NE(msg.find("- pass_rate (integer from 0 to 8)\n- solution_length (integer from 128 to 8192)\n\nProblem: "
                     "What is {x}? Let's think step by step."),
            std::string::npos);
  EXPECT_EQ(msg.rfind("Think step-by-step between <meta> and </meta>", 0), 0u);
  EXPECT_EQ(msg.find("{max_length}"), std::string::npos);
  EXPECT_EQ(with_notion_hint("P.", {"a", "b"}), "P. The problem could be solved using following math notions: a, b.");
  EXPECT_EQ(with_notion_hint("P.", {}), "P.");
}

TEST(Masa, RewardModuleScoresMetaGroupsAndNamesMissingEvidence) {
  config::MasaConfig c;
  MetaRewardModule module(c, 8192);
  auto e = std::make_shared<SolutionEvidence>(worked_example());
  reward::Group g;
  g.prompt = "meta prompt";
  g.solutions = e;
  g.responses.push_back({"<meta>x</meta>{\"math_notion\": [\"Vieta's formulas\", \"discriminant\"], \"pass_rate\": 3, "
                         "\"solution_length\": 4500}",
                         {},
                         false});
  g.responses.push_back({"no json", {}, true});
  const auto s = module.score({g});
  ASSERT_EQ(s.rewards.size(), 1u);
  EXPECT_NEAR(s.rewards[0][0], 2.5 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(s.rewards[0][1], 0.0);
  EXPECT_DOUBLE_EQ(s.metrics.at("parse_fail_rate"), 0.5);
  EXPECT_DOUBLE_EQ(s.metrics.at("abs_pass_error"), 0.0);
  EXPECT_DOUBLE_EQ(s.metrics.at("pass_rate_out_of_range"), 0.0);
  g.responses = {{"</meta>{\"pass_rate\": 45}", {}, false}, {"</meta>{\"pass_rate\": 8}", {}, false}};
  EXPECT_DOUBLE_EQ(module.score({g}).metrics.at("pass_rate_out_of_range"), 0.5);
  g.solutions = nullptr;
  EXPECT_THROW(module.score({g}), std::invalid_argument);
}

}  // namespace
}  // namespace introspect::masa
