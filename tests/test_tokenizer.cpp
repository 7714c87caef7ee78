// Tokenizers against llama.cpp's vectors (ids produced by HF AutoTokenizer), plus decoding, special tokens and
// invalid input. Runs in a binary that also loads LibTorch, which is what proves sentencepiece's protobuf and
// LibTorch's coexist.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

#include "introspect/tokenizer/tokenizer.h"
#include "test_util.h"

using introspect::testing::read_file;
using introspect::tokenizer::sanitize_utf8;
using introspect::tokenizer::Tokenizer;
using ::testing::HasSubstr;

namespace {

const std::string kTok = std::string(INTROSPECT_SHARED_DIR) + "/data/tokenizers";

struct Vectors {
  std::vector<std::string> inputs;
  std::vector<std::vector<int32_t>> ids;
};

Vectors load_vectors(const std::string& vocab) {
  const std::string base = kTok + "/llamacpp-vocab-tests/ggml-vocab-" + vocab + ".gguf";
  Vectors v;
  const std::string inp = read_file(base + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    v.inputs.push_back(inp.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  std::istringstream out(read_file(base + ".out"));
  for (std::string line; std::getline(out, line);) {
    std::istringstream nums(line);
    std::vector<int32_t> row;
    for (int32_t id; nums >> id;) row.push_back(id);
    v.ids.push_back(row);
  }
  return v;
}

const Tokenizer& tokenizer(const std::string& path) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[path];
  if (!t) t = Tokenizer::load(kTok + "/" + path);
  return *t;
}

void expect_all_vectors(const std::string& vocab, const std::string& path) {
  const Vectors v = load_vectors(vocab);
  ASSERT_EQ(v.inputs.size(), 46u);
  ASSERT_EQ(v.ids.size(), 46u);
  const Tokenizer& tok = tokenizer(path);
  int exact = 0;
  for (size_t i = 0; i < v.inputs.size(); ++i) {
    const auto got = tok.encode(v.inputs[i]);
    if (got == v.ids[i]) ++exact;
    EXPECT_EQ(got, v.ids[i]) << vocab << " input #" << i << ": '" << v.inputs[i] << "'";
  }
  EXPECT_EQ(exact, 46) << vocab << " with " << path;
}

}  // namespace

TEST(LlamaCppVectors, Qwen2WithQwen3Tokenizer) { expect_all_vectors("qwen2", "qwen3/tokenizer.json"); }
TEST(LlamaCppVectors, DeepseekR1QwenWithQwen3Tokenizer) {
  expect_all_vectors("deepseek-r1-qwen", "qwen3/tokenizer.json");
}
TEST(LlamaCppVectors, LlamaBpeWithLlama3Tokenizer) { expect_all_vectors("llama-bpe", "llama3/tokenizer.json"); }
TEST(LlamaCppVectors, LlamaSpmWithLlama2Model) { expect_all_vectors("llama-spm", "llama2/tokenizer.model"); }

TEST(Tokenizer, DecodeRoundTripsTheVectors) {
  for (const auto& [vocab, path] : std::vector<std::pair<std::string, std::string>>{
           {"qwen2", "qwen3/tokenizer.json"}, {"llama-bpe", "llama3/tokenizer.json"}}) {
    const Tokenizer& tok = tokenizer(path);
    for (const auto& text : load_vectors(vocab).inputs) {
      EXPECT_EQ(tok.decode(tok.encode(text)), text) << path;
    }
  }
}

TEST(Tokenizer, AddedAndSpecialTokens) {
  const Tokenizer& qwen = tokenizer("qwen3/tokenizer.json");
  const auto ids = qwen.encode("<|im_start|>user\nHi<|im_end|><think>x</think>");
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_THAT(ids, ::testing::Contains(151645));
  EXPECT_THAT(ids, ::testing::Contains(151667));
  EXPECT_TRUE(qwen.is_special(151645));
  EXPECT_FALSE(qwen.is_special(151667)) << "<think> is an added token but not special";
  EXPECT_EQ(qwen.decode(ids), "<|im_start|>user\nHi<|im_end|><think>x</think>");
  EXPECT_EQ(qwen.decode(ids, /*skip_special=*/true), "user\nHi<think>x</think>");
  EXPECT_EQ(qwen.eos_id(), 151645);
  EXPECT_FALSE(qwen.bos_id().has_value());
  EXPECT_EQ(qwen.vocab_size(), 151669);
}

TEST(Tokenizer, AddSpecialFollowsTheCheckpointRules) {
  // As transformers does with these files: Qwen3 adds nothing, this Llama-3 tokenizer.json has no BOS template,
  // and a bare Llama-2 .model adds BOS.
  EXPECT_EQ(tokenizer("qwen3/tokenizer.json").encode("Hello world", true), (std::vector<int32_t>{9707, 1879}));
  EXPECT_EQ(tokenizer("llama3/tokenizer.json").encode("Hello world", true), (std::vector<int32_t>{9906, 1917}));
  EXPECT_EQ(tokenizer("llama2/tokenizer.model").encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tokenizer("llama2/tokenizer.model").decode({1, 15043, 3186}, true), "Hello world");
}

TEST(Utf8, SanitizeFollowsPythonsReplaceRule) {
  // Expected strings are Python's bytes.decode("utf-8", errors="replace").
  EXPECT_EQ(sanitize_utf8("abc"), "abc");
  EXPECT_EQ(sanitize_utf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(sanitize_utf8("\xe2\x82"), "\xEF\xBF\xBD");                // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(sanitize_utf8("\xe2\x82" "A"), "\xEF\xBF\xBD" "A");
  EXPECT_EQ(sanitize_utf8("\xc0\xaf"), "\xEF\xBF\xBD\xEF\xBF\xBD");    // overlong: two
  EXPECT_EQ(sanitize_utf8("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  EXPECT_EQ(sanitize_utf8("\xf4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // > U+10FFFF
  EXPECT_EQ(sanitize_utf8("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");    // valid 4-byte emoji
}

TEST(Utf8, InvalidInputEncodesAsItsReplacement) {
  for (const char* path : {"qwen3/tokenizer.json", "llama3/tokenizer.json", "llama2/tokenizer.model"}) {
    const Tokenizer& tok = tokenizer(path);
    const std::string bad = "x\xff\xfe y\xe2\x82";
    EXPECT_EQ(tok.encode(bad), tok.encode(sanitize_utf8(bad))) << path;
  }
  // Half of a multi-byte character decodes to U+FFFD instead of invalid UTF-8.
  const Tokenizer& qwen = tokenizer("qwen3/tokenizer.json");
  const auto ids = qwen.encode("\xe4\xbd\xa0");  // one CJK character
  EXPECT_EQ(qwen.decode(ids), "\xe4\xbd\xa0");
  if (ids.size() > 1) {
    EXPECT_EQ(qwen.decode({ids[0]}), "\xEF\xBF\xBD");
  }
}

TEST(Tokenizer, LoadErrorsNameThePath) {
  try {
    Tokenizer::load("/nonexistent/tokenizer.json");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/tokenizer.json"));
  }
  introspect::testing::ScratchDir dir;
  dir.write("tokenizer.json", "{broken");
  try {
    Tokenizer::load(dir.path());
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("tokenizer.json: not valid JSON"));
  }
  // Ids past the vocabulary decode to nothing, as in HF tokenizers (checked there: decode([785, 151771, 1879])
  // gives 'The world'); negative ids are an error.
  EXPECT_EQ(tokenizer("qwen3/tokenizer.json").decode({785, 151771, 999999, 1879}),
            tokenizer("qwen3/tokenizer.json").decode({785, 1879}));
  try {
    tokenizer("qwen3/tokenizer.json").decode({-3});
    FAIL();
  } catch (const std::out_of_range& e) {
    EXPECT_THAT(e.what(), HasSubstr("token id -3"));
  }
  // libtorch in the same process: the protobuf of sentencepiece and of LibTorch coexist.
  EXPECT_EQ(at::ones({2}).sum().item<float>(), 2.0f);
}

#include "introspect/tokenizer/chat_template.h"

using introspect::tokenizer::ChatMessage;
using introspect::tokenizer::ChatTemplate;

TEST(ChatTemplate, PlainAndCustomForBaseModels) {
  const std::vector<ChatMessage> conv{{"system", "Be brief.", {}}, {"user", "2+2?", {}}};
  EXPECT_EQ(ChatTemplate::by_name("plain").render(conv, true), "Be brief.\n\n2+2?");
  EXPECT_EQ(ChatTemplate::by_name("custom", "{system}\nQuestion: {user}\nAnswer:").render(conv, true),
            "Be brief.\nQuestion: 2+2?\nAnswer:");
  EXPECT_EQ(ChatTemplate::by_name("custom", "Q: {user}\nA:").render({{"user", "x", {}}}, true), "Q: x\nA:");
}

TEST(ChatTemplate, UnsupportedTemplatesAndShapesAreNamed) {
  try {
    ChatTemplate::by_name("mistral");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown chat template 'mistral' (supported: qwen3, llama3, plain, custom)"));
  }
  EXPECT_THROW(ChatTemplate::by_name("custom", "no placeholder"), std::invalid_argument);
  introspect::testing::ScratchDir dir;
  dir.write("tokenizer_config.json", R"({"chat_template": "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"})");
  try {
    ChatTemplate::from_checkpoint(dir.path());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("its chat_template is not one introspect supports; choose one with "
                                    "data.chat_template (qwen3, llama3, plain, custom)"));
  }
  try {
    ChatTemplate::by_name("qwen3").render({{"tool", "{}", {}}}, true);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("role 'tool' is not supported"));
  }
  EXPECT_THROW(ChatTemplate::by_name("custom", "{user}").render({{"user", "a", {}}, {"user", "b", {}}}, true),
               std::invalid_argument);
  EXPECT_EQ(ChatTemplate::from_checkpoint(kTok + "/qwen3").name(), "qwen3");
  EXPECT_EQ(ChatTemplate::from_checkpoint(kTok + "/llama3").name(), "llama3");
}
