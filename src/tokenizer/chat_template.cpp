#include "introspect/tokenizer/chat_template.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tokenizer_impl.h"

namespace introspect::tokenizer {
namespace {

const char* kNames = "qwen3, llama3, plain, custom";

// Python's str.strip(chars) family.
std::string lstrip(const std::string& s, const char* chars) {
  const auto b = s.find_first_not_of(chars);
  return b == std::string::npos ? "" : s.substr(b);
}
std::string rstrip(const std::string& s, const char* chars) {
  const auto e = s.find_last_not_of(chars);
  return e == std::string::npos ? "" : s.substr(0, e + 1);
}
std::string strip(const std::string& s, const char* chars) { return lstrip(rstrip(s, chars), chars); }
constexpr const char* kWhitespace = " \t\n\r\f\v";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
  return s;
}

void check_roles(const std::vector<ChatMessage>& messages, const std::string& name) {
  for (const auto& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      throw std::invalid_argument("chat template " + name + ": role '" + m.role +
                                  "' is not supported (system, user and assistant are)");
    }
  }
}

// Qwen3's template, without tools: reasoning is kept only for assistant turns after the last user query.
std::string render_qwen3(const std::vector<ChatMessage>& messages, bool add_generation_prompt, bool enable_thinking) {
  std::string out;
  if (!messages.empty() && messages[0].role == "system") out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  size_t last_query = messages.empty() ? 0 : messages.size() - 1;
  for (size_t i = messages.size(); i-- > 0;) {
    const auto& c = messages[i].content;
    const bool tool_response = c.rfind("<tool_response>", 0) == 0 && c.size() >= 16 &&
                               c.compare(c.size() - 16, 16, "</tool_response>") == 0;
    if (messages[i].role == "user" && !tool_response) {
      last_query = i;
      break;
    }
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (m.role == "user" || (m.role == "system" && i > 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      if (m.reasoning_content) {
        reasoning = *m.reasoning_content;
      } else if (const auto close = content.find("</think>"); close != std::string::npos) {
        const std::string before = content.substr(0, close);
        content = lstrip(content.substr(content.rfind("</think>") + 8), "\n");
        const auto open = before.rfind("<think>");
        reasoning = lstrip(rstrip(open == std::string::npos ? before : before.substr(open + 7), "\n"), "\n");
      }
      const bool is_last = i + 1 == messages.size();
      if (i > last_query && (is_last || !reasoning.empty())) {
        out += "<|im_start|>assistant\n<think>\n" + strip(reasoning, "\n") + "\n</think>\n\n" + lstrip(content, "\n");
      } else {
        out += "<|im_start|>assistant\n" + content;
      }
      out += "<|im_end|>\n";
    }
  }
  if (add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& messages, const std::string& bos) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += bos;
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + strip(messages[i].content, kWhitespace) +
           "<|eot_id|>";
  }
  return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

std::string render_plain(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const auto& m : messages) out += (out.empty() ? "" : "\n\n") + m.content;
  return out;
}

std::string render_custom(const std::vector<ChatMessage>& messages, const std::string& text) {
  std::string system, user;
  int users = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "system" && i == 0) {
      system = messages[i].content;
    } else if (messages[i].role == "user" && users++ == 0) {
      user = messages[i].content;
    } else {
      throw std::invalid_argument("chat template custom: only an optional system message and one user message are "
                                  "supported");
    }
  }
  return replace_all(replace_all(text, "{system}", system), "{user}", user);
}

}  // namespace

ChatTemplate ChatTemplate::by_name(const std::string& name, const std::string& custom_text, const std::string& bos) {
  if (name != "qwen3" && name != "llama3" && name != "plain" && name != "custom") {
    throw std::invalid_argument("unknown chat template '" + name + "' (supported: " + kNames + ")");
  }
  if (name == "custom" && custom_text.find("{user}") == std::string::npos) {
    throw std::invalid_argument("custom chat template must contain a {user} placeholder");
  }
  ChatTemplate t;
  t.name_ = name;
  t.custom_text_ = custom_text;
  t.bos_token_ = bos;
  return t;
}

ChatTemplate ChatTemplate::from_checkpoint(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "tokenizer_config.json" : path;
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot open (needed to find the chat template)");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(file.string() + ": not valid JSON: " + e.what());
  }
  const auto jinja = config.value("chat_template", std::string());
  const std::string bos = config_token(config, "bos_token").value_or("");
  if (jinja.find("<|im_start|>") != std::string::npos && jinja.find("</think>") != std::string::npos) {
    return by_name("qwen3");
  }
  if (jinja.find("<|start_header_id|>") != std::string::npos && jinja.find("Cutting Knowledge") == std::string::npos &&
      jinja.find("tools") == std::string::npos) {
    return by_name("llama3", "", bos);
  }
  throw std::runtime_error(file.string() + ": its chat_template is not one introspect supports" +
                           (jinja.empty() ? std::string(" (there is none)") : std::string()) +
                           "; choose one with data.chat_template (" + kNames + ")");
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 bool enable_thinking) const {
  check_roles(messages, name_);
  if (name_ == "qwen3") return render_qwen3(messages, add_generation_prompt, enable_thinking);
  if (name_ == "llama3") return render_llama3(messages, bos_token_);
  if (name_ == "plain") return render_plain(messages);
  return render_custom(messages, custom_text_);
}

}  // namespace introspect::tokenizer
