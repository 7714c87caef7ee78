// Test tool for the chat-template parity check: renders each stdin JSON line
// {"messages": [...], "add_generation_prompt": bool, "enable_thinking": bool} with the checkpoint's template and
// prints {"text": ..., "ids": [...]} (ids without added special tokens, as apply_chat_template tokenizes).
#include <iostream>
#include <nlohmann/json.hpp>

#include "introspect/tokenizer/chat_template.h"
#include "introspect/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: chat_render CHECKPOINT_DIR < conversations.jsonl\n";
    return 2;
  }
  namespace tk = introspect::tokenizer;
  const auto tmpl = tk::ChatTemplate::from_checkpoint(argv[1]);
  const auto tok = tk::Tokenizer::load(argv[1]);
  for (std::string line; std::getline(std::cin, line);) {
    const auto j = nlohmann::json::parse(line);
    std::vector<tk::ChatMessage> messages;
    for (const auto& m : j.at("messages")) {
      tk::ChatMessage msg{m.at("role"), m.at("content"), std::nullopt};
      if (m.contains("reasoning_content")) msg.reasoning_content = m["reasoning_content"].get<std::string>();
      messages.push_back(msg);
    }
    const auto text = tmpl.render(messages, j.value("add_generation_prompt", false), j.value("enable_thinking", true));
    std::cout << nlohmann::json{{"text", text}, {"ids", tok->encode(text)}}.dump() << "\n";
  }
  return 0;
}
