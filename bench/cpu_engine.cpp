// CPU engine throughput on the real GGUF: prefill tok/s (one batch of P tokens) and decode tok/s (greedy
// steps after a short prompt), for both weight storages (quantised mmap + int8 dot vs widened to f32), plus
// the host copy bandwidth that bounds decode. Prints one JSON object per row on stdout (the bench results
// writer, scripts/write_cpu_engine_results.py, merges them with llama.cpp's numbers).
// Usage: cpu_engine [--model PATH] [--threads N] [--prefill P] [--decode D] [--reps R] [--storage q|f32|both]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fieldprint/engine.h"
#include "fieldprint/sampler.h"

namespace {

using Clock = std::chrono::steady_clock;
double Secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double CopyBandwidthGBs() {
  const size_t n = size_t{256} << 20;
  std::vector<char> a(n, 1), b(n, 0);
  double best = 0.0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), n);
    const double s = Secs(t0, Clock::now());
    best = std::max(best, 2.0 * static_cast<double>(n) / s / 1e9);  // read + write
    a[static_cast<size_t>(r)] = b[static_cast<size_t>(r) + 1];
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, storage = "both";
  int threads = 2, prefill = 256, decode = 64, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--model")
      model = v;
    else if (k == "--threads")
      threads = std::atoi(v);
    else if (k == "--prefill")
      prefill = std::atoi(v);
    else if (k == "--decode")
      decode = std::atoi(v);
    else if (k == "--reps")
      reps = std::atoi(v);
    else if (k == "--storage")
      storage = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const std::string path = fp::ResolveModelPath(model);
  std::printf("{\"row\": \"copy\", \"copy_gbs\": %.2f}\n", CopyBandwidthGBs());
  for (const std::string st : {std::string("q"), std::string("f32")}) {
    if (storage != "both" && storage != st) continue;
    auto w =
        fp::LlamaWeights::Load(path, st == "q" ? fp::WeightStorage::kQuantized : fp::WeightStorage::kF32);
    if (!w.ok()) {
      std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
      return 1;
    }
    const size_t bytes = w->matrix_bytes_per_token();
    fp::EngineOptions eo;
    eo.num_threads = threads;
    eo.kv_capacity = 4096;
    eo.max_chunk = 256;
    auto e = fp::LlamaEngine::Create(std::move(w).value(), eo);
    if (!e.ok()) {
      std::fprintf(stderr, "%s\n", e.status().ToString().c_str());
      return 1;
    }
    const int32_t vocab = (*e)->config().vocab_size;
    std::vector<int32_t> tokens(static_cast<size_t>(prefill));
    for (int i = 0; i < prefill; ++i) tokens[static_cast<size_t>(i)] = (i * 7919 + 13) % vocab;
    auto sampler = fp::Sampler::Create(fp::SamplerConfig{});
    for (int r = 0; r < reps; ++r) {
      std::vector<float> logits;
      auto seq = (*e)->NewSequence(nullptr);
      auto t0 = Clock::now();
      if (!(*e)->Forward(*seq, tokens, 1, &logits).ok()) return 1;
      const double tp = Secs(t0, Clock::now());
      (void)(*e)->FreeSequence(*seq);
      seq = (*e)->NewSequence(nullptr);
      if (!(*e)->Forward(*seq, std::span(tokens).first(32), 1, &logits).ok()) return 1;
      t0 = Clock::now();
      for (int i = 0; i < decode; ++i) {
        const std::array<int32_t, 1> one{*sampler->Sample(logits)};
        if (!(*e)->Forward(*seq, one, 1, &logits).ok()) return 1;
      }
      const double td = Secs(t0, Clock::now());
      (void)(*e)->FreeSequence(*seq);
      std::printf(
          "{\"row\": \"engine\", \"storage\": \"%s\", \"kernel\": \"%s\", \"threads\": %d, "
          "\"prefill_tokens\": %d, \"prefill_s\": %.5f, \"decode_tokens\": %d, \"decode_s\": %.5f, "
          "\"matrix_bytes_per_token\": %zu}\n",
          st.c_str(), fp::LinearKernelName(), threads, prefill, tp, decode, td, bytes);
      std::fflush(stdout);
    }
  }
  return 0;
}
