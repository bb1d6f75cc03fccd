// libFuzzer target for the GGUF reader: any input must parse or give a Status, never crash or read out of
// bounds. On a successful parse it touches every byte the reader exposes, and loads a tokenizer/hparams from
// it, so that a view past the buffer or an inconsistent header reaches ASan. Seed: tests' GgufBuilder files
// or any real .gguf.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fieldprint/gguf.h"
#include "fieldprint/hparams.h"
#include "fieldprint/quant.h"
#include "fieldprint/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = fp::GgufFile::FromBuffer(std::span<const uint8_t>(data, size));
  if (!f.ok()) return 0;
  volatile uint64_t sink = 0;
  for (const fp::GgufKv& kv : f->metadata()) sink = sink + kv.key.size() + kv.value.Summary(32).size();
  for (const fp::GgufTensor& t : f->tensors()) {
    if (t.nbytes) sink = sink + t.data[0] + t.data[t.nbytes - 1];
    if (fp::CanDequantize(t.type) && t.cols() <= 4096) {
      float row[4096];
      if (fp::DequantizeRow(t.type, t.data, row, t.cols()).ok())
        sink = sink + static_cast<uint64_t>(row[0] != 0.f);
    }
  }
  (void)fp::ReadLlamaHParams(*f);
  (void)fp::Tokenizer::FromGguf(*f);
  return 0;
}
