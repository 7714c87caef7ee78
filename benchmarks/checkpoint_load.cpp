// Checkpoint loading against a plain sequential read of the same bytes (issue B's goal: >= 80% of read speed).
//   bench_checkpoint_load gen DIR GB   writes a random Qwen3-shaped fp32 checkpoint of about GB gigabytes
//   bench_checkpoint_load stream DIR   read()s every *.safetensors file through one reused 8 MB buffer
//   bench_checkpoint_load read DIR     read()s every *.safetensors file into a fresh buffer of its size
//   bench_checkpoint_load load DIR     CausalLM::load into fp32 parameters
// Each measuring mode prints one JSON line: seconds, bytes, GB/s and the process's peak RSS.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "introspect/core/runtime.h"
#include "introspect/model/decoder.h"

namespace fs = std::filesystem;
using introspect::model::CausalLM;
using introspect::model::ModelArch;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

long peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

uint64_t checkpoint_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") n += fs::file_size(e.path());
  return n;
}

void report(const char* mode, double seconds, uint64_t bytes) {
  std::printf("{\"mode\": \"%s\", \"seconds\": %.4f, \"bytes\": %llu, \"gb_per_s\": %.3f, \"peak_rss_mb\": %ld}\n", mode,
              seconds, static_cast<unsigned long long>(bytes), bytes / seconds / 1e9, peak_rss_mb());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_checkpoint_load gen|read|load DIR [GB]\n");
    return 2;
  }
  const std::string mode = argv[1];
  const fs::path dir = argv[2];
  introspect::core::init_torch(0);
  if (mode == "gen") {
    const double gb = argc > 3 ? std::stod(argv[3]) : 1.0;
    ModelArch a;
    a.model_type = "qwen3";
    a.hidden_size = 1024;
    a.intermediate_size = 3072;
    a.num_heads = 16;
    a.num_kv_heads = 8;
    a.head_dim = 64;
    a.qk_norm = true;
    a.vocab_size = 32000;
    const double per_layer = 4.0 * (1024.0 * 1024 * 3 + 3 * 1024.0 * 3072);
    a.num_layers = std::max<int64_t>(1, std::lround((gb * 1e9 - 4.0 * 2 * 32000 * 1024) / per_layer));
    CausalLM::random(a, 1).save(dir, /*max_shard_bytes=*/500'000'000);
    std::printf("wrote %s: %d layers, %.2f GB\n", dir.c_str(), static_cast<int>(a.num_layers), checkpoint_bytes(dir) / 1e9);
    return 0;
  }
  const uint64_t bytes = checkpoint_bytes(dir);
  if (mode == "stream" || mode == "read") {
    // "stream" never leaves the cache-resident 8 MB buffer; "read" lands every byte in fresh memory, as any
    // loader must. Both read 8 MB per call.
    constexpr size_t kBlock = 8 << 20;
    std::vector<std::unique_ptr<char[]>> keep;
    std::unique_ptr<char[]> stream_buf(new char[kBlock]);
    const double t0 = now();
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() != ".safetensors") continue;
      const size_t size = fs::file_size(e.path());
      char* dst = stream_buf.get();
      if (mode == "read") {
        keep.emplace_back(new char[size]);
        dst = keep.back().get();
      }
      const int fd = ::open(e.path().c_str(), O_RDONLY);
      size_t off = 0;
      ssize_t n;
      while ((n = ::read(fd, dst + (mode == "read" ? off : 0), std::min(kBlock, size - off))) > 0) off += n;
      ::close(fd);
    }
    report(mode.c_str(), now() - t0, bytes);
  } else if (mode == "load") {
    const double t0 = now();
    const auto model = CausalLM::load(dir);
    report("load", now() - t0, bytes);
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  return 0;
}
