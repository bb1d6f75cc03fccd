// transcript_test_util.h — what the transcript tests share: a per-test temporary folder (removed when the test
// binary exits), a random model written as a GGUF file, an Ed25519 key file, malformed transcripts, and the CPU
// engine + byte tokenizer + "be brief" system anchor they generate from.
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "fieldprint/anchor_segment.h"
#include "fieldprint/engine.h"
#include "fieldprint/llama_weights.h"
#include "fieldprint/model_config.h"
#include "fieldprint/transcript.h"

namespace fp::testing {

// <tmp>/fp_transcript_<pid>/<test name>/, created; the whole root goes when the process exits.
inline std::filesystem::path TranscriptTempDir() {
  namespace fs = std::filesystem;
  struct Root {
    fs::path path = fs::temp_directory_path() / ("fp_transcript_" + std::to_string(::getpid()));
    ~Root() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static Root root;
  const fs::path d = root.path / ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::create_directories(d);
  return d;
}

// A random TinyByteModelConfig model of `type` as a GGUF file in dir; returns its path.
inline std::string WriteRandomModel(const std::filesystem::path& dir, uint64_t seed, WeightType type,
                                    const std::string& name) {
  auto w = LlamaWeights::Random(TinyByteModelConfig(), seed, type);
  EXPECT_TRUE(w.ok());
  const std::vector<uint8_t> bytes = WriteGguf(*w);
  const std::string path = (dir / name).string();
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// A fresh Ed25519 private key as PEM in dir/key.pem; returns its path.
inline std::string WriteEd25519Key(const std::filesystem::path& dir) {
  EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  EXPECT_NE(raw, nullptr);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(raw, &EVP_PKEY_free);
  const std::string path = (dir / "key.pem").string();
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "w"), &BIO_free);
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr), 1);
  return path;
}

// Transcript::Parse of `json` with the first occurrence of `from` replaced by `to` (a test failure, and the
// unedited text parsed, when `from` is absent): how the tests build malformed transcripts.
inline Result<Transcript> ParseEdited(const std::string& json, const std::string& from, const std::string& to) {
  std::string s = json;
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return Transcript::Parse(s);
}

// The model file loaded into a CPU engine (2 threads, page 8, 256 KV slots) with the byte tokenizer and the
// system-prompt anchor built.
struct TranscriptEngine {
  std::unique_ptr<LlamaEngine> engine;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> anchor_tokens;
  std::shared_ptr<AnchorSegment> anchor;
};
inline TranscriptEngine LoadTranscriptEngine(const std::string& model_path) {
  TranscriptEngine r;
  r.tok = MakeByteTokenizer();
  auto w = LlamaWeights::Load(model_path, WeightStorage::kQuantized);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  EngineOptions eo;
  eo.num_threads = 2;
  eo.page_size = 8;
  eo.kv_capacity = 256;
  auto e = LlamaEngine::Create(std::move(w).value(), eo);
  EXPECT_TRUE(e.ok());
  r.engine = std::move(e).value();
  r.anchor_tokens = r.tok->Encode("<|im_start|>system\nbe brief<|im_end|>\n");
  auto anchor = r.engine->BuildAnchor(r.anchor_tokens);
  EXPECT_TRUE(anchor.ok());
  r.anchor = std::move(anchor).value();
  return r;
}

}  // namespace fp::testing
