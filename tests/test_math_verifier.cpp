// The built-in math verifier: the shared equivalence cases (math-verify's and Hendrycks' test tables), each
// normalisation family, extraction, time limits, threads, and `introspect verify`.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "introspect/reward/math_verifier.h"
#include "test_util.h"

namespace {

using introspect::reward::answers_equal;
using introspect::reward::extract_answer;
using introspect::reward::ExtractOptions;
using introspect::reward::normalize_answer;
using introspect::reward::VerifyOptions;

const std::string kEquivDir = std::string(INTROSPECT_SHARED_DIR) + "/data/math_equiv/";

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

// One row of math-verify's tables, run as its harness does: both sides go through extraction (LaTeX, plus plain
// numbers when the row lists "expr"), then the comparison with the row's precision and flags.
bool math_verify_row(const nlohmann::json& row) {
  ExtractOptions extract;
  VerifyOptions verify;
  if (row.contains("match_types")) {
    extract.number_fallback = false;
    for (const auto& m : row["match_types"]) extract.number_fallback |= m == "expr";
    verify.float_rounding = row["precision"].get<int>();
    verify.strict = row["strict"].get<bool>();
    verify.allow_set_relation_comp = row["allow_set_relation_comp"].get<bool>();
  }
  const auto gold = extract_answer(row["gold"].get<std::string>(), extract);
  const auto pred = extract_answer(row["pred"].get<std::string>(), extract);
  return gold && pred && answers_equal(*gold, *pred, verify);
}

TEST(MathVerifierShared, MathVerifyCasesAgreeAtLeast97Percent) {
  const auto rows = read_jsonl(kEquivDir + "math_verify_cases.jsonl");
  if (rows.empty()) GTEST_SKIP() << "no shared data at " << kEquivDir;
  ASSERT_EQ(rows.size(), 269u);
  std::map<std::string, std::pair<int, int>> by_harness;  // harness -> (agree, total)
  int agree = 0;
  for (const auto& row : rows) {
    const bool ok = math_verify_row(row) == (row["expected"].get<int>() == 1);
    agree += ok;
    auto& h = by_harness[row["harness"].get<std::string>()];
    h.first += ok;
    ++h.second;
    if (!ok) std::cout << "  miss: " << row["id"].get<std::string>() << " (expected " << row["expected"] << ")\n";
  }
  for (const auto& [harness, counts] : by_harness) {
    std::cout << "  " << harness << ": " << counts.first << "/" << counts.second << "\n";
  }
  const double rate = static_cast<double>(agree) / static_cast<double>(rows.size());
  std::cout << "math-verify cases: " << agree << "/" << rows.size() << " = " << rate << "\n";
  EXPECT_GE(rate, 0.97);
}

TEST(MathVerifierShared, HendrycksCasesAllAgree) {
  const auto rows = read_jsonl(kEquivDir + "hendrycks_is_equiv_cases.jsonl");
  if (rows.empty()) GTEST_SKIP() << "no shared data at " << kEquivDir;
  ASSERT_EQ(rows.size(), 16u);
  for (const auto& row : rows) {
    EXPECT_EQ(answers_equal(row["gold"].get<std::string>(), row["pred"].get<std::string>()),
              row["expected"].get<int>() == 1)
        << row["id"].get<std::string>();
  }
}

void expect_equal(const std::string& gold, const std::vector<std::string>& preds) {
  for (const auto& p : preds) EXPECT_TRUE(answers_equal(gold, p)) << gold << " vs " << p;
}
void expect_unequal(const std::string& gold, const std::vector<std::string>& preds) {
  for (const auto& p : preds) EXPECT_FALSE(answers_equal(gold, p)) << gold << " vs " << p;
}

TEST(MathVerifier, IntegersDecimalsThousands) {
  expect_equal("1000", {"1,000", "1000.0", "1{,}000", "1\\,000", "01000", "\\$1,000", "1000."});
  expect_equal("0.5", {".5", "0.50", "\\frac{1}{2}"});
  expect_equal("7425000", {"7,425,000"});
  expect_equal("11111111100", {"11,\\! 111,\\! 111,\\! 100"});
  expect_equal("-5", {"-5", "- 5"});
  expect_unequal("1000", {"1001", "100", "10,000"});
  expect_unequal("32349", {"32, 349"});  // a list, not a number
  expect_unequal(".0000672", {".0000673"});
  // integers beyond 64 bits compare exactly
  expect_equal("2^{100}", {"1267650600228229401496703205376"});
  expect_unequal("2^{100}", {"1267650600228229401496703205377"});
  expect_unequal("100!", {"100! + 1"});
}

TEST(MathVerifier, Fractions) {
  expect_equal("\\frac{1}{2}",
               {"1/2", "\\dfrac{1}{2}", "\\tfrac{1}{2}", "\\frac12", "\\frac{2}{4}", "0.5", "\\cfrac{1}{2}"});
  expect_equal("\\frac{10}{9}", {"10/9", "\\frac{10}9", "\\frac1{0.9}"});
  expect_equal("-\\frac{10}{9}", {"-10/9", "\\frac{-10}{9}"});
  expect_equal("\\frac{5}{2}", {"2\\frac{1}{2}", "2 \\frac{1}{2}", "2.5"});
  expect_equal("\\frac{1}{3}", {"0.333333", "0.3333333"});
  expect_unequal("\\frac{1}{3}", {"0.33", "0.3", "\\frac{1}{4}", "3"});
  expect_unequal("\\frac{5}{2}", {"\\frac{2}{5}", "2\\frac{1}{3}"});
}

TEST(MathVerifier, RadicalsAndPi) {
  expect_equal("2\\sqrt{3}", {"\\sqrt{12}", "2\\sqrt3", "\\sqrt{3} \\cdot 2", "2 \\times 3^{1/2}"});
  expect_equal("\\sqrt[3]{8}", {"2"});
  expect_equal("\\frac{\\pi}{2}", {"\\pi/2", "0.5\\pi", "1.5707963"});
  expect_equal("2\\pi", {"\\pi \\cdot 2", "2 \\pi"});
  expect_unequal("2\\sqrt{3}", {"3\\sqrt{2}", "\\sqrt{6}", "2"});
  expect_unequal("\\pi", {"3.14", "\\frac{22}{7}"});
}

TEST(MathVerifier, PercentUnitsTextDegrees) {
  expect_equal("28\\%", {"28", "28%", "28 percent", "0.28", "28\\text{ percent}"});
  expect_unequal("28\\%", {"29", "2.8"});
  expect_equal("15\\mbox{ cm}^2", {"15", "15 \\text{cm}^2", "15\\text{ cm}^{2}"});
  expect_equal("125\\text{ miles}", {"125", "125 miles"});
  expect_equal("5.4 \\text{ cents}", {"5.4"});
  expect_equal("\\text{Evelyn}", {"Evelyn", "\\textbf{Evelyn}", "\\text{evelyn}"});
  expect_unequal("\\text{Evelyn}", {"\\text{Briana}"});
  expect_equal("90^\\circ", {"90", "90^{\\circ}", "90 ^\\circ", "90\\degree", "90°"});
  expect_unequal("90^\\circ", {"45^\\circ"});
}

TEST(MathVerifier, TuplesIntervalsSetsMatrices) {
  expect_equal("(1, 2)", {"(1,2)", "\\left( 1, 2 \\right)", "\\left(1,\\,2\\right)"});
  expect_unequal("(1, 2)", {"(2, 1)", "(1, 2, 3)", "[1, 2]"});
  expect_equal("\\left( 3, \\frac{\\pi}{2} \\right)", {"(3, \\pi/2)", "(3,\\tfrac{\\pi}2)"});
  expect_equal("[0, 1)", {"[0,1)"});
  expect_unequal("[0, 1)", {"(0, 1)", "[0, 1]", "(0, 1]"});
  expect_equal("(-\\infty, 0]", {"(-\\infty,0]", "(-inf, 0]"});
  expect_equal("(-\\infty, 2) \\cup (3, \\infty)", {"(3, \\infty) \\cup (-\\infty, 2)"});
  expect_equal("\\{1, 2\\}", {"\\{2, 1\\}", "\\{1, 2, 2\\}"});
  expect_unequal("\\{1, 2\\}", {"\\{1, 3\\}", "\\{1\\}"});
  expect_equal("1 \\pm \\sqrt{19}", {"\\{1 + \\sqrt{19}, 1 - \\sqrt{19}\\}", "1 \\mp \\sqrt{19}"});
  expect_unequal("1 \\pm \\sqrt{19}", {"1 + \\sqrt{19}"});
  // a bare list keeps its order, as MATH's is_equiv has it
  expect_unequal("10, 4, -2", {"4, 10, -2"});
  expect_equal("10, 4, -2", {"10,4,-2"});
  const std::string m = "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}";
  expect_equal(m, {"\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}",
                   "\\left[\\begin{array}{cc}1 & 2 \\\\ 3 & 4\\end{array}\\right]",
                   "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"});
  expect_unequal(m, {"\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}",
                     "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}"});
  expect_equal("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", {"\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}"});
}

TEST(MathVerifier, SymbolicEquality) {
  expect_equal("(x+1)^2", {"x^2+2x+1", "1 + 2x + x^2", "(1+x)(x+1)"});
  expect_equal("\\frac{x+2}{7}", {"\\frac{x}{7}+\\frac{2}{7}"});
  expect_equal("\\tan^2(y)+1", {"\\sec^2(y)", "\\frac{1}{\\cos^2 y}"});
  expect_equal("p - q", {"-q + p"});
  expect_equal("2k+2", {"2(k+1)"});
  expect_equal("x^5 - x^4 + x^3 - x^2 + x - 1", {"(x-1)(x^4+x^2+1)"});
  expect_equal("\\frac{11+9a}{20}", {"\\frac{11}{20} + \\frac{9a}{20}", "0.55 + 0.45a"});
  expect_unequal("(x+1)^2", {"x^2+1", "x^2+2x-1", "(y+1)^2"});
  expect_unequal("x+2n+1", {"x+1"});
  expect_unequal("(a+5)(b+2)", {"5(b+2)"});
  expect_unequal("\\sqrt{x^2}", {"x"});  // not for negative x
}

TEST(MathVerifier, AssignmentsRelationsChoices) {
  expect_equal("3", {"x=3", "x = 3", "k = 3", "x \\approx 3"});
  expect_equal("x = 3", {"3"});
  expect_equal("y = 2x + 3", {"2x+3", "y=3+2x"});
  expect_unequal("x = 3", {"y = 3"});
  expect_unequal("2x + z = 1", {"1"});  // not an assignment
  expect_equal("x \\geq 5", {"5 \\leq x", "x >= 5", "x \\ge 5"});
  expect_equal("x < 1", {"-x > -1"});
  expect_unequal("x > 5", {"x < 5", "x \\geq 5"});
  expect_equal("2x+4y-3=0", {"y=-\\frac{1}{2}x+\\frac{3}{4}"});
  expect_equal("[-2, 7]", {"x \\in [-2,7]"});
  expect_equal("-2 \\le x \\le 7", {"[-2, 7]", "x \\in [-2,7]"});  // a predicted set meets a gold inequality
  // a gold set meets a predicted inequality only when asked (math-verify's allow_set_relation_comp)
  VerifyOptions sets;
  EXPECT_FALSE(answers_equal("[-2, 7]", "-2 \\le x \\le 7", sets));
  sets.allow_set_relation_comp = true;
  EXPECT_TRUE(answers_equal("[-2, 7]", "-2 \\le x \\le 7", sets));
  expect_equal("(A)", {"A", "\\text{(A)}", "\\textbf{(A)}", "\\text{A}", "(a)"});
  expect_unequal("(A)", {"(B)", "B", "\\text{(C)}"});
}

TEST(MathVerifier, LatexNoise) {
  expect_equal("\\left(x-2\\right)\\left(x+2\\right)", {"(x-2)(x+2)", "x^2-4"});
  expect_equal("10080", {"10,\\!080", "10\\,080", "10 080"});
  expect_equal("\\frac{3}{4}", {"\\displaystyle\\frac{3}{4}", "\\;\\frac{3}{4}\\;", "$\\frac34$", "\\(\\frac{3}{4}\\)",
                                "\\boxed{\\frac{3}{4}}"});
  expect_equal("10", {"\\$10", "10\\text{ dollars}", "\\textbf{10}"});
}

TEST(MathVerifier, NothingIsNotAnAnswer) {
  expect_unequal("", {"", "1"});
  expect_unequal("1", {"", "   ", "\\boxed{}"});
  EXPECT_FALSE(answers_equal("\\frac{1}{0}", "\\frac{2}{0}"));
}

TEST(MathVerifier, Extraction) {
  EXPECT_EQ(extract_answer("so the answer is \\boxed{\\frac{1}{\\sqrt{2}}}."), "\\frac{1}{\\sqrt{2}}");
  EXPECT_EQ(extract_answer("A first guess was \\boxed{1} which fails the second condition. "
                           "So \\boxed{ {2} + \\{3\\} }"),
            "{2} + \\{3\\}");
  EXPECT_EQ(extract_answer("$\\boxed 5$"), "5");
  EXPECT_EQ(extract_answer("\\fbox{7}"), "7");
  EXPECT_EQ(extract_answer("\\boxed{1} and \\boxed{2}"), "\\{1, 2\\}");
  EXPECT_EQ(extract_answer("Natalia sold 48/2 = 24 clips in May.\n#### 72"), "72");
  EXPECT_EQ(extract_answer("We add them up. The answer is 17."), "17");
  EXPECT_EQ(extract_answer("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct."), "\\frac{3}{4}");
  EXPECT_EQ(extract_answer("First $x = 2$, then the area is $4\\pi$."), "4\\pi");
  EXPECT_EQ(extract_answer("The probability is 2/3. <|im_start|>"), "2/3");
  EXPECT_EQ(extract_answer("It costs 1,000.50 dollars"), "1000.50");
  EXPECT_EQ(extract_answer("no numbers here"), std::nullopt);
  // a box before a later statement of the answer gives way to it
  EXPECT_EQ(extract_answer("\\boxed{255} so he has $10,455. Final Answer: The final answer is $10,455$. I hope"),
            "10,455");
  // modes
  ExtractOptions only_boxed;
  only_boxed.mode = "boxed";
  EXPECT_EQ(extract_answer("The answer is 5.", only_boxed), std::nullopt);
  ExtractOptions gsm;
  gsm.mode = "gsm8k";
  EXPECT_EQ(extract_answer("\\boxed{3} #### 4", gsm), "4");
  ExtractOptions dollar;
  dollar.mode = "last_dollar";
  EXPECT_EQ(extract_answer("$1$ and $2$", dollar), "1, 2");
  ExtractOptions bad;
  bad.mode = "nope";
  EXPECT_THROW(extract_answer("1", bad), std::invalid_argument);
  // numbers only when asked
  ExtractOptions latex_only;
  latex_only.number_fallback = false;
  EXPECT_EQ(extract_answer("It is 42", latex_only), std::nullopt);
}

TEST(MathVerifier, ExtractionSkipsThinking) {
  const std::string r = "<think>maybe \\boxed{3}? no</think>The result is \\boxed{4}.";
  EXPECT_EQ(extract_answer(r), "4");
  EXPECT_EQ(extract_answer("<think>I think \\boxed{3} but I ran out of tokens"), std::nullopt);
  EXPECT_EQ(extract_answer("thinking \\boxed{3}</think>no box after"), std::nullopt);
  ExtractOptions keep;
  keep.ignore_think = false;
  EXPECT_EQ(extract_answer("<think>I think \\boxed{3} but I ran out of tokens", keep), "3");
}

TEST(MathVerifier, NormalizedFormsVote) {
  EXPECT_EQ(normalize_answer("\\dfrac{1}{2}"), normalize_answer("0.5"));
  EXPECT_EQ(normalize_answer("1/2"), normalize_answer("\\frac{2}{4}"));
  EXPECT_EQ(normalize_answer("\\left( 1, 2 \\right)"), normalize_answer("(1,2)"));
  EXPECT_EQ(normalize_answer("x + 1"), normalize_answer("1+x"));
  EXPECT_EQ(normalize_answer("1,000"), normalize_answer("1000"));
  EXPECT_EQ(normalize_answer("90^\\circ"), normalize_answer("90"));
  EXPECT_NE(normalize_answer("1/2"), normalize_answer("1/3"));
  EXPECT_NE(normalize_answer("(1,2)"), normalize_answer("(2,1)"));
}

TEST(MathVerifier, PathologicalInputsReturnWithinTheTimeLimit) {
  using Clock = std::chrono::steady_clock;
  const double limit = 0.5, slack = 1.0;
  // refused by the size guards before any GiNaC work
  for (const auto& [g, p] : std::vector<std::pair<std::string, std::string>>{
           {"(x+1)^{100000}", "(x+2)^{100000}"},
           {"10^{10^{10}}", "10^{10^{10}}+1"},
           {"2^{2^{2^{2^{2}}}}", "3"},
           {"1000000!", "1"}}) {
    const auto t0 = Clock::now();
    EXPECT_FALSE(answers_equal(g, p, limit)) << g;
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), limit + slack) << g;
  }
  // within the guards but slow for GiNaC (normal() of big rational functions, seconds): the helper is killed
  const auto t0 = Clock::now();
  EXPECT_FALSE(answers_equal("\\frac{(x+y+z+w+1)^{16}}{x+1}", "\\frac{(x+y+z+w+2)^{16}}{y+1}", limit));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), limit + slack);
  // and the next check gets a fresh helper
  EXPECT_TRUE(answers_equal("(x+1)^2", "x^2+2x+1", 5.0));
}

TEST(MathVerifier, ManyThreadsAgreeWithOne) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"(x+1)^2", "x^2+2x+1"}, {"\\tan^2 y+1", "\\sec^2 y"}, {"x^2+1", "x^2-1"}, {"\\frac{1}{2}", "0.5"},
      {"(1,2)", "(2,1)"},      {"2x+4y-3=0", "y=-x/2+3/4"}, {"\\sqrt{12}", "2\\sqrt3"}, {"p-q", "q-p"}};
  std::vector<bool> serial;
  for (const auto& [g, p] : pairs) serial.push_back(answers_equal(g, p, 10.0));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t k = 0; k < pairs.size(); ++k) {
          if (answers_equal(pairs[k].first, pairs[k].second, 10.0) != serial[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
  EXPECT_EQ(serial, (std::vector<bool>{true, true, false, true, false, true, true, false}));
}

TEST(MathVerifierCli, VerifiesALineAtATime) {
  introspect::testing::ScratchDir dir;
  const auto cases = dir.write("cases.jsonl",
                               "{\"gold\": \"\\\\frac{1}{2}\", \"pred\": \"0.5\", \"id\": 1}\n"
                               "{\"gold\": \"3\", \"pred\": \"4\"}\n"
                               "{\"gold\": 27.0, \"pred\": \"27\"}\n");
  auto r = introspect::testing::run_command(std::string(INTROSPECT_BINARY) + " verify --cases " + cases.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "{\"equal\": true}\n{\"equal\": false}\n{\"equal\": true}\n");

  const auto responses = dir.write("responses.jsonl",
                                   "{\"gold\": \"12\", \"pred\": \"<think>\\\\boxed{11}</think>So \\\\boxed{12}.\"}\n"
                                   "{\"gold\": \"12\", \"pred\": \"I do not know.\"}\n");
  r = introspect::testing::run_command(std::string(INTROSPECT_BINARY) + " verify --extract --cases " +
                                       responses.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "{\"equal\": true}\n{\"equal\": false}\n");
}

TEST(MathVerifierCli, AMalformedLineNamesFileAndLine) {
  introspect::testing::ScratchDir dir;
  const auto cases = dir.write("bad.jsonl", "{\"gold\": \"1\", \"pred\": \"1\"}\n{\"gold\": \"1\"}\nnot json\n");
  const auto r = introspect::testing::run_command(std::string(INTROSPECT_BINARY) + " verify --cases " + cases.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(cases.string() + ":2: no \"pred\" field"), std::string::npos) << r.output;
}

}  // namespace
