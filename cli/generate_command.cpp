// `fieldprint generate`: the engine end to end on the CPU or a CUDA device (see generate_command.h). --device
// auto (the default) takes the GPU when the build has CUDA and a device is present; the rest of the run is
// the same Generator over an EngineBackend either way.
#include "generate_command.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "fieldprint/chat_session.h"
#include "fieldprint/cuda_engine.h"
#include "fieldprint/engine.h"
#include "fieldprint/engine_backend.h"
#include "fieldprint/fault_injection.h"
#include "fieldprint/generation.h"
#include "fieldprint/head_gamma.h"
#include "fieldprint/llama_weights.h"
#include "fieldprint/progress.h"
#include "fieldprint/tokenizer.h"
#include "fieldprint/transcript.h"

namespace fp::cli {

namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  std::string anchor;
  std::string anchor_file;
  bool anchor_set = false;
  bool prompt_set = false;  // no --prompt: an interactive chat on stdin (ChatSession)
  int32_t max_tokens = 128;
  uint64_t seed = 0;
  float temperature = 0.f;
  int32_t top_k = 0;
  float top_p = 1.f;
  int threads = 0;
  std::string device = "auto";
  std::string verify = "off";
  int32_t commit_every = 0;
  std::string inject_fault;  // KvFaultSpec text (fault_injection.h); empty = none
  bool verified_only = false;
  std::string gamma = "0";  // one value, or n_heads comma-separated values (head_gamma.h)
  std::string weights = "quantized";
  std::string transcript;  // write a verifiable transcript here (verification on; CUDA: batch-invariant engine)
  std::string sign_key;    // Ed25519 PEM private key to sign it with
  int32_t fingerprint_top_k = kFingerprintTopK;  // tolerant fingerprints in the transcript (0 = none)
};

// CLI11 prints nothing for a RuntimeError, so the reason goes to stderr first.
[[noreturn]] void Fail(const Status& st, int code = 1) {
  std::fprintf(stderr, "fieldprint generate: %s\n", st.ToString().c_str());
  throw CLI::RuntimeError(code);
}
// Bad input that only the loaded model can reveal (a gamma list of the wrong length, a fault past the last
// layer): exit 2 like the usage errors CLI11 catches while parsing.
[[noreturn]] void FailUsage(const Status& st) { Fail(st, 2); }

// A CLI11 check from one of our parsers: the parser's message, or "" when the text is fine.
template <typename F>
CLI::Validator ParsedBy(F parse, const std::string& what) {
  return CLI::Validator(
      [parse](std::string& text) -> std::string {
        auto r = parse(text);
        return r.ok() ? std::string() : r.status().message();
      },
      what);
}

int Run(const GenerateArgs& a) {
  using Clock = std::chrono::steady_clock;
  auto device = ResolveDevice(a.device);
  if (!device.ok()) Fail(device.status());
  const bool cuda = *device == Device::kCuda;
  auto mode = ParseVerifyMode(a.verify);
  if (!mode.ok()) Fail(mode.status());
  auto gamma_list = ParseGammaList(a.gamma);  // syntax checked while parsing; the count needs the model
  if (!gamma_list.ok()) FailUsage(gamma_list.status());
  KvFaultSpec fault;
  if (!a.inject_fault.empty()) {
    auto f = ParseKvFaultSpec(a.inject_fault);
    if (!f.ok()) FailUsage(f.status());
    fault = *f;
  }
  if (!a.prompt_set && !a.transcript.empty()) {
    FailUsage(InvalidArgument("--transcript records one prompt: give --prompt (the chat mode has none)"));
  }
  if (!a.transcript.empty()) {
    // On CUDA the engine then runs batch-invariant (cuda_engine.h), so a one-prefill replay matches bit for bit.
    if (*mode == VerifyMode::kOff)
      Fail(InvalidArgument("--transcript needs the run's commits: --verify sync|async|sync-full"));
    if (fault.step >= 0) Fail(InvalidArgument("--transcript cannot record a run with --inject-fault"));
    // A transcript records one gamma (transcript.h).
    if (!IsUniform(*gamma_list)) FailUsage(InvalidArgument("--transcript records one gamma, not a per-head list"));
  } else if (!a.sign_key.empty()) {
    Fail(InvalidArgument("--sign-key needs --transcript"));
  }
  const std::string path = ResolveModelPath(a.model);
  std::fprintf(stderr, "loading %s\n", path.c_str());
  const auto t0 = Clock::now();
  ProgressBar load_bar(stderr, "weights");  // drawn only on a terminal
  // The CUDA engine widens every matrix to bf16 itself: the zero-copy quantised view is the cheapest source.
  auto weights = LlamaWeights::Load(
      path, a.weights == "f32" && !cuda ? WeightStorage::kF32 : WeightStorage::kQuantized, load_bar.callback());
  if (!weights.ok()) {
    Fail(weights.status());
  }
  auto tok = Tokenizer::FromGguf(*weights->gguf());
  if (!tok.ok()) Fail(tok.status());
  // The anchor is the system message; the sequence is the user turn plus the assistant header. Special tokens
  // split the ChatML text, so tokens(system + user) == tokens(system) ++ tokens(user).
  std::string anchor_text = tok->chat_template().default_system;
  if (!a.anchor_file.empty()) {
    std::ifstream f(a.anchor_file, std::ios::binary);
    if (!f) Fail(IoError("cannot read --anchor-file " + a.anchor_file));
    std::stringstream ss;
    ss << f.rdbuf();
    anchor_text = ss.str();
  } else if (a.anchor_set) {
    anchor_text = a.anchor;
  }
  const std::vector<ChatMessage> sys{{"system", anchor_text}};
  const std::vector<int32_t> anchor_tokens = tok->EncodeChat(sys, false);
  std::vector<int32_t> prompt;  // empty in chat mode
  if (a.prompt_set) {
    const std::vector<ChatMessage> conv{{"system", anchor_text}, {"user", a.prompt}};
    const std::vector<int32_t> all = tok->EncodeChat(conv, true);
    if (all.size() <= anchor_tokens.size() ||
        !std::equal(anchor_tokens.begin(), anchor_tokens.end(), all.begin())) {
      Fail(Internal("the chat template's system part is not a token prefix of the conversation"));
    }
    prompt.assign(all.begin() + static_cast<std::ptrdiff_t>(anchor_tokens.size()), all.end());
  }

  const ModelConfig config = weights->config();
  // One value (or a uniform list) stays the scalar option, which transcripts record; a list goes per head.
  const bool uniform_gamma = IsUniform(*gamma_list);
  const float gamma = gamma_list->front();
  std::vector<float> gamma_per_head;
  if (gamma_list->size() > 1) {
    auto g = ResolveHeadGammas(0.f, *gamma_list, config.n_heads);  // exactly n_heads values
    if (!g.ok()) FailUsage(g.status());
    if (!uniform_gamma) gamma_per_head = std::move(g).value();
  }
  // The pool holds this one sequence: prompt + generated tokens (the anchor lives outside it); a chat's
  // conversation grows each turn, up to the context.
  const int32_t kv_capacity =
      a.prompt_set
          ? std::min<int32_t>(config.context_length, static_cast<int32_t>(prompt.size()) + a.max_tokens + 64)
          : config.context_length;
  std::unique_ptr<LlamaEngine> cpu_engine;
  std::unique_ptr<CudaLlama> cuda_engine;
  std::unique_ptr<EngineBackend> engine;
  if (cuda) {
    CudaEngineOptions co;
    co.gamma = gamma;
    co.gamma_per_head = gamma_per_head;
    co.kv_capacity = kv_capacity;
    co.max_batch = 1;  // one sequence
    // A transcript must replay in one prefill: every GEMM batch-invariant, attention at a fixed split. The skinny
    // GEMM where the shapes allow (cheaper at one sequence than cuBLAS on 64-row blocks; the transcript records it).
    co.batch_invariant = !a.transcript.empty();
    if (SkinnyInvariantGemmFits(config)) co.batch_invariant_gemm = CudaEngineOptions::InvariantGemm::kSkinny;
    ProgressBar upload_bar(stderr, "upload ");
    auto e = CudaLlama::FromWeights(*weights, co, upload_bar.callback());
    if (!e.ok()) Fail(e.status());
    cuda_engine = std::move(e).value();
    // One-time start-up (first kernel launches, cuBLAS set-up) before the anchor / prefill / decode clocks, so they
    // time steady-state work, as verify --device cuda does before its replay clock.
    if (Status st = cuda_engine->Warmup(); !st.ok()) Fail(st);
    engine = MakeCudaBackend(*cuda_engine);
    std::fprintf(stderr, "%s; CUDA engine%s, bf16 weights (%.1f MB per token) (%.2f s)\n",
                 config.Summary().c_str(), co.batch_invariant ? " (batch-invariant, for the transcript)" : "",
                 static_cast<double>(cuda_engine->weight_bytes()) / 1e6,
                 std::chrono::duration<double>(Clock::now() - t0).count());
  } else {
    EngineOptions eo;
    eo.num_threads = a.threads;
    eo.gamma = gamma;
    eo.gamma_per_head = gamma_per_head;
    eo.kv_capacity = kv_capacity;
    auto e = LlamaEngine::Create(std::move(weights).value(), eo);
    if (!e.ok()) Fail(e.status());
    cpu_engine = std::move(e).value();
    engine = MakeCpuBackend(*cpu_engine);
    std::fprintf(stderr, "%s; %s weights, %d threads, linear kernel %s (%.2f s)\n", config.Summary().c_str(),
                 a.weights.c_str(), cpu_engine->pool().size(), LinearKernelName(),
                 std::chrono::duration<double>(Clock::now() - t0).count());
  }

  if (fault.step >= 0) {
    if (Status st = CheckKvFaultTarget(fault.target, engine->cache().layout()); !st.ok()) FailUsage(st);
  }

  const auto ta = Clock::now();
  auto anchor = engine->BuildAnchor(anchor_tokens);
  if (!anchor.ok()) Fail(anchor.status());
  const double anchor_s = std::chrono::duration<double>(Clock::now() - ta).count();
  std::fprintf(stderr, "anchor: %zu tokens prefilled in %.3f s (%.1f tok/s), sealed; gamma %s\n",
               anchor_tokens.size(), anchor_s, anchor_s > 0 ? anchor_tokens.size() / anchor_s : 0.0,
               uniform_gamma ? a.gamma.c_str() : ("per head " + a.gamma).c_str());

  GenerationOptions go;
  go.max_tokens = a.max_tokens;
  go.sampler.temperature = a.temperature;
  go.sampler.top_k = a.top_k;
  go.sampler.top_p = a.top_p;
  go.sampler.seed = a.seed;
  go.verify = *mode;
  go.commit_every = a.commit_every;
  go.inject_fault_step = fault.step;
  go.inject_fault_target = fault.target;
  go.verified_only = a.verified_only;
  Generator gen(*engine, *tok, *anchor);
  const auto stream = [](std::string_view s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  const auto report = [&](const GenerationStats& st) {
    std::fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", st.prompt_tokens, st.prefill_seconds,
                 st.prefill_tok_s());
    std::fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s), stop: %s\n", st.generated_tokens,
                 st.decode_seconds, st.decode_tok_s(), st.stop_reason.c_str());
    if (*mode != VerifyMode::kOff) {
      std::fprintf(stderr,
                   "verify %s: watermark %d of %d KV positions, faults injected %d, rollbacks %d, "
                   "recomputed %d tokens%s%s; anchor root %s\n",
                   a.verify.c_str(), st.verified_watermark, st.kv_length, st.faults_injected, st.rollbacks,
                   st.recomputed_tokens, st.faults_injected > 0 ? "; fault at " : "", st.fault_target.c_str(),
                   st.anchor_root.Hex().c_str());
    }
  };
  if (!a.prompt_set) {  // chat: one user turn per stdin line, each prefilling the conversation (ChatSession)
    ChatSession chat(gen, *tok, anchor_text);
    const bool tty = isatty(STDIN_FILENO) != 0;
    if (tty) std::fprintf(stderr, "chat: one message per line; an empty line or end of input ends it\n");
    std::string line;
    while (true) {
      if (tty) std::fputs("> ", stderr);
      if (!std::getline(std::cin, line) || line.empty()) break;
      auto st = chat.Turn(line, go, stream);
      std::fputc('\n', stdout);
      std::fflush(stdout);
      if (!st.ok()) Fail(st.status());
      report(*st);
    }
    return 0;
  }
  auto stats = gen.Generate(prompt, go, stream);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!stats.ok()) Fail(stats.status());
  report(*stats);
  if (!a.transcript.empty()) {
    auto t = cuda ? TranscriptFromRun(*cuda_engine, path, go, anchor_tokens, prompt, *stats)
                  : TranscriptFromRun(*cpu_engine, path, a.weights, go, anchor_tokens, prompt, *stats);
    if (!t.ok()) Fail(t.status());
    const auto tf = Clock::now();
    if (a.fingerprint_top_k > 0) {  // one more prefill of the fed tokens (fingerprint.h)
      const Status st = cuda ? RecordFingerprints(*t, *cuda_engine, *anchor, a.fingerprint_top_k)
                             : RecordFingerprints(*t, *cpu_engine, *anchor, a.fingerprint_top_k);
      if (!st.ok()) Fail(st);
    }
    const double fingerprint_s = std::chrono::duration<double>(Clock::now() - tf).count();
    if (!a.sign_key.empty()) {
      if (Status st = SignTranscript(*t, a.sign_key); !st.ok()) Fail(st);
    }
    if (Status st = t->Save(a.transcript); !st.ok()) Fail(st);
    // Timings to hold against `fieldprint verify` (which prints its replay time the same way).
    std::fprintf(stderr,
                 "transcript: %zu commits%s, %s -> %s; generate %.3f s (anchor %.3f + prefill %.3f + decode %.3f), "
                 "fingerprints %.3f s\n",
                 t->commits.size(), t->signature ? ", signed" : "", t->device.c_str(), a.transcript.c_str(),
                 anchor_s + stats->prefill_seconds + stats->decode_seconds, anchor_s, stats->prefill_seconds,
                 stats->decode_seconds, fingerprint_s);
  }
  return 0;
}

}  // namespace

void RegisterGenerateCommand(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd =
      app.add_subcommand("generate", "generate text with a GGUF Llama model (anchor = system prompt)");
  cmd->add_option("--model", args->model,
                  "GGUF file (default: $FIELDPRINT_MODEL, $FIELDPRINT_CACHE or ~/.cache/fieldprint)");
  auto* prompt = cmd->add_option("--prompt", args->prompt,
                                 "the user message (without it: a chat, one message per stdin line until an empty "
                                 "line or end of input; each turn prefills the conversation after the anchor)");
  auto* anchor =
      cmd->add_option("--anchor", args->anchor, "anchor text (default: the model's system prompt)");
  cmd->add_option("--anchor-file", args->anchor_file, "read the anchor text from a file")->excludes(anchor);
  cmd->add_option("--max-tokens", args->max_tokens, "tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->seed, "sampling seed");
  cmd->add_option("--temperature", args->temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", args->top_k, "0 = off")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", args->top_p, "1 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--threads", args->threads, "CPU threads (0 = all cores; CPU engine only)");
  cmd->add_option("--device", args->device, "auto (cuda when a GPU is present) | cpu | cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("--verify", args->verify, "off | sync-full | sync | async")
      ->check(CLI::IsMember({"off", "sync-full", "sync", "async"}));
  cmd->add_option("--commit-every", args->commit_every, "also commit every N tokens (0 = full pages only)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--inject-fault", args->inject_fault,
                  "flip one committed KV bit before decode step STEP: "
                  "STEP[:layer=L][:kv=k|v][:page=P][:byte=B][:bit=b] (defaults layer 0, k, page 0, byte 3, "
                  "bit 6; page = the sequence's page, byte within its committed rows) or STEP:random[=SEED]")
      ->check(ParsedBy(ParseKvFaultSpec, "FAULT"));
  cmd->add_flag("--verified-only", args->verified_only, "print text only once verified");
  cmd->add_option("--gamma", args->gamma,
                  "log-bias added to anchor attention logits: one value (all heads) or n_heads "
                  "comma-separated values (per head)")
      ->check(ParsedBy(ParseGammaList, "GAMMA[,GAMMA...]"));
  cmd->add_option("--weights", args->weights,
                  "CPU: quantized (mmap, integer dot) | f32 (widened at load); CUDA: always bf16")
      ->check(CLI::IsMember({"quantized", "f32"}));
  cmd->add_option("--transcript", args->transcript,
                  "write a verifiable transcript (JSON) of the run; needs --verify != off. With --device cuda the "
                  "CUDA engine then runs batch-invariant (deterministic GEMMs and attention split; slower) so "
                  "`verify --device cuda` can replay it bit for bit");
  cmd->add_option("--sign-key", args->sign_key, "sign the transcript with this Ed25519 PEM private key");
  cmd->add_option("--fingerprint-top-k", args->fingerprint_top_k,
                  "the transcript also records, per 32 fed tokens, the top-K entries of a signed sum of their "
                  "final hidden states (one extra prefill; checked by verify --tolerant); 0 = none")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([args, anchor, prompt] {
    args->anchor_set = anchor->count() > 0;
    args->prompt_set = prompt->count() > 0;
    Run(*args);
  });
}

}  // namespace fp::cli
