// introspect verify: the built-in math verifier over a JSONL file of {gold, pred} pairs.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "commands.h"
#include "introspect/reward/math_verifier.h"

namespace introspect::cli {
namespace {

// Answers are strings; a number (AMC's 27.0) is taken as written.
std::string answer_field(const nlohmann::json& row, const char* key) {
  const auto it = row.find(key);
  if (it == row.end()) throw std::invalid_argument(std::string("no \"") + key + "\" field");
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  throw std::invalid_argument(std::string("\"") + key + "\" must be a string or a number");
}

}  // namespace

int verify(const VerifyOptions& options) {
  std::ifstream in(options.cases);
  if (!in) {
    std::cerr << options.cases << ": cannot open\n";
    return 1;
  }
  reward::VerifyOptions verify_options;
  verify_options.timeout_s = options.timeout_s;
  std::string line, out;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    try {
      const auto row = nlohmann::json::parse(line);
      if (!row.is_object()) throw std::invalid_argument("expected a JSON object");
      const std::string gold = answer_field(row, "gold");
      std::string pred = answer_field(row, "pred");
      bool equal = false;
      if (options.extract) {
        // pred is a whole response; one that gives no answer is not equal
        if (const auto answer = reward::extract_answer(pred)) {
          equal = reward::answers_equal(gold, *answer, verify_options);
        }
      } else {
        equal = reward::answers_equal(gold, pred, verify_options);
      }
      out += equal ? "{\"equal\": true}\n" : "{\"equal\": false}\n";
      if (out.size() > (1 << 16)) {
        std::cout << out << std::flush;
        out.clear();
      }
    } catch (const std::exception& e) {
      std::cout << out << std::flush;
      std::cerr << options.cases << ":" << n << ": " << e.what() << "\n";
      return 1;
    }
  }
  std::cout << out << std::flush;
  return 0;
}

}  // namespace introspect::cli
