#include "introspect/train/evaluate.h"

#include <chrono>
#include <future>
#include <thread>

#include "introspect/config/schema.h"
#include "introspect/reward/eval_metrics.h"
#include "introspect/reward/math_verifier.h"
#include "introspect/tokenizer/prompt_format.h"
#include "introspect/tokenizer/tokenizer.h"

namespace introspect::train {

EvalSummary evaluate(const rollout::Generator& generator, const tokenizer::Tokenizer& tok,
                     const tokenizer::PromptFormatter& format, const std::vector<io::Problem>& problems,
                     const rollout::SamplingParams& params, const config::MathRewardConfig& grading,
                     int64_t max_prompt_tokens, const std::vector<int64_t>& ks, uint64_t seed,
                     std::vector<ProblemResult>* per_problem, const std::function<void(int64_t)>& progress,
                     const EvalShard& shard) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<ProblemResult> results(problems.size());
  std::vector<rollout::Prompt> prompts;
  std::vector<size_t> prompt_problem;
  for (size_t i = 0; i < problems.size(); ++i) {
    results[i].index = static_cast<int64_t>(i);
    if (static_cast<int64_t>(i) % shard.world != shard.rank) continue;
    results[i].source = problems[i].source;
    auto ids = format.encode(problems[i].prompt);
    results[i].prompt_tokens = static_cast<int64_t>(ids.size());
    if (results[i].prompt_tokens > max_prompt_tokens) {
      results[i].skipped = true;
      continue;
    }
    prompts.push_back({std::move(ids), -1, static_cast<int64_t>(i)});
    prompt_problem.push_back(i);
  }
  const auto samples = prompts.empty() ? std::vector<rollout::Sample>{} : generator.generate(prompts, params, progress);

  // Grading is CPU-bound string and algebra work: spread it over a few threads.
  std::vector<std::string> texts(samples.size()), answers(samples.size());
  std::vector<char> correct(samples.size(), 0);
  const reward::ExtractOptions extract{grading.extract, grading.ignore_think};
  auto grade = [&](size_t begin, size_t stride) {
    for (size_t s = begin; s < samples.size(); s += stride) {
      texts[s] = tok.decode(samples[s].tokens, /*skip_special=*/true);
      const auto& gold = problems[prompt_problem[samples[s].prompt_index]].answer;
      const auto answer = reward::extract_answer(texts[s], extract);
      if (!answer) continue;
      answers[s] = reward::normalize_answer(*answer);
      correct[s] = reward::answers_equal(gold, *answer, grading.timeout_s);
    }
  };
  const size_t workers = std::max<size_t>(1, std::min<size_t>(4, std::thread::hardware_concurrency()));
  std::vector<std::future<void>> jobs;
  for (size_t w = 0; w < workers; ++w) jobs.push_back(std::async(std::launch::async, grade, w, workers));
  for (auto& j : jobs) j.get();

  EvalSummary summary;
  double tokens = 0;
  for (size_t s = 0; s < samples.size(); ++s) {
    auto& r = results[prompt_problem[samples[s].prompt_index]];
    r.responses.push_back(texts[s]);
    r.answers.push_back(answers[s]);
    r.correct.push_back(correct[s] != 0);
    r.response_tokens.push_back(static_cast<int64_t>(samples[s].tokens.size()));
    r.finish.push_back(samples[s].finish);
    tokens += static_cast<double>(samples[s].tokens.size());
  }
  const int64_t n = params.n;
  for (const auto& r : results) {
    if (r.index % shard.world != shard.rank) continue;
    if (r.skipped) {
      ++summary.skipped;
      continue;
    }
    ++summary.problems;
    int64_t c = 0;
    for (bool ok : r.correct) c += ok;
    summary.pass_at_1 += static_cast<double>(c) / static_cast<double>(n);
    for (int64_t k : ks) {
      if (k < 1 || k > n) continue;
      summary.pass_at_k[k] += reward::pass_at_k(n, c, k);
      summary.maj_at_k[k] += reward::majority_correct(r.answers, r.correct, k, seed + static_cast<uint64_t>(r.index));
    }
  }
  if (summary.problems > 0) {
    const double p = static_cast<double>(summary.problems);
    summary.pass_at_1 /= p;
    for (auto& [k, v] : summary.pass_at_k) v /= p;
    for (auto& [k, v] : summary.maj_at_k) v /= p;
  }
  summary.samples = static_cast<int64_t>(samples.size());
  summary.mean_response_tokens = samples.empty() ? 0 : tokens / static_cast<double>(samples.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (per_problem) *per_problem = std::move(results);
  return summary;
}

}  // namespace introspect::train
