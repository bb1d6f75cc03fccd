// `fieldprint inspect`: prints what the GGUF reader validated — a quick look at a model file without loading
// it.
#include "inspect_command.h"

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "fieldprint/gguf.h"
#include "fieldprint/hparams.h"
#include "fieldprint/quant.h"

namespace fp::cli {

namespace {

struct InspectOptions {
  std::string path;
  bool no_tensors = false;
  size_t max_chars = 100;
};

std::string HumanBytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(b) / (1 << 20));
  else if (b >= 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

int RunInspect(const InspectOptions& o) {
  auto file = GgufFile::Open(o.path);
  if (!file.ok()) {
    std::fprintf(stderr, "inspect: %s\n", file.status().ToString().c_str());
    return 1;
  }
  const GgufFile& f = *file;
  std::printf("file        %s\n", o.path.c_str());
  std::printf("gguf        v%u, %s, alignment %llu, data at offset %llu\n", f.version(),
              HumanBytes(f.file_size()).c_str(), static_cast<unsigned long long>(f.alignment()),
              static_cast<unsigned long long>(f.data_offset()));
  std::printf("\nmetadata (%zu)\n", f.metadata().size());
  for (const GgufKv& kv : f.metadata()) {
    std::printf("  %-42.*s %-7s %s\n", static_cast<int>(kv.key.size()), kv.key.data(),
                GgufValueTypeName(kv.value.type), kv.value.Summary(o.max_chars).c_str());
  }
  std::map<std::string, std::pair<size_t, uint64_t>> by_type;  // type -> (count, bytes)
  uint64_t total_bytes = 0, total_params = 0;
  if (!o.no_tensors)
    std::printf("\ntensors (%zu)\n  %-34s %-5s %-16s %12s\n", f.tensors().size(), "name", "type", "shape",
                "bytes");
  for (const GgufTensor& t : f.tensors()) {
    if (!o.no_tensors) {
      std::printf("  %-34.*s %-5s %-16s %12llu\n", static_cast<int>(t.name.size()), t.name.data(),
                  GgmlTypeName(t.type), t.ShapeString().c_str(), static_cast<unsigned long long>(t.nbytes));
    }
    auto& e = by_type[GgmlTypeName(t.type)];
    e.first += 1;
    e.second += t.nbytes;
    total_bytes += t.nbytes;
    total_params += static_cast<uint64_t>(t.numel());
  }
  std::printf("\ntotals      %zu tensors, %llu parameters, %s of weights\n", f.tensors().size(),
              static_cast<unsigned long long>(total_params), HumanBytes(total_bytes).c_str());
  for (const auto& [name, e] : by_type) {
    std::printf("  %-5s %4zu tensors %12s\n", name.c_str(), e.first, HumanBytes(e.second).c_str());
  }
  for (const GgufTensor& t : f.tensors()) {
    if (!CanDequantize(t.type)) {
      std::printf("  note: %s (%s) has no CPU kernels in this build\n", std::string(t.name).c_str(),
                  GgmlTypeName(t.type));
    }
  }
  auto hp = ReadLlamaHParams(f);
  if (!hp.ok()) {
    std::printf("\nhyper-parameters: %s\n", hp.status().ToString().c_str());
    return 0;
  }
  const LlamaHParams& h = *hp;
  std::printf("\nhyper-parameters (%s)\n", h.arch.c_str());
  std::printf("  layers %lld, hidden %lld, heads %lld, kv heads %lld (GQA group %lld), head dim %lld\n",
              static_cast<long long>(h.n_layers), static_cast<long long>(h.hidden),
              static_cast<long long>(h.n_heads), static_cast<long long>(h.n_kv_heads),
              static_cast<long long>(h.n_heads / h.n_kv_heads), static_cast<long long>(h.head_dim));
  std::printf(
      "  ffn %lld, vocab %lld, context %lld, rope theta %g (dims %lld), rms eps %g, tied embeddings %s\n",
      static_cast<long long>(h.ffn), static_cast<long long>(h.vocab), static_cast<long long>(h.context),
      h.rope_theta, static_cast<long long>(h.rope_dim), h.rms_eps, h.tied_embeddings ? "yes" : "no");
  return 0;
}

}  // namespace

void RegisterInspectCommand(CLI::App& app) {
  auto opts = std::make_shared<InspectOptions>();
  auto* cmd = app.add_subcommand("inspect", "print a GGUF file's metadata, tensors and hyper-parameters");
  cmd->add_option("file", opts->path, "the .gguf file")->required();
  cmd->add_flag("--no-tensors", opts->no_tensors, "skip the per-tensor table");
  cmd->add_option("--max-chars", opts->max_chars, "cut long strings at this many characters")
      ->capture_default_str();
  cmd->callback([opts] {
    const int rc = RunInspect(*opts);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace fp::cli
