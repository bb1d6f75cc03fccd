// Transcript file format (JSON, strict parsing), its Ed25519 signature (OpenSSL EVP) and its construction
// from a finished run. The replay lives in transcript_replay.cpp.
#include "fieldprint/transcript.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fieldprint/engine.h"
#include "fieldprint/generation.h"
#include "transcript_internal.h"

namespace fp {

namespace {

using json = nlohmann::json;

constexpr std::string_view kSignDomain = "fieldprint-transcript-v1\n";
// What a fingerprint block holds (fingerprint.h): top-k of the signed sum of the block's final-RMSNorm states.
constexpr const char* kFingerprintKind = "final_rmsnorm_signed_block_sum";

std::string HexOf(std::span<const uint8_t> b) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (uint8_t x : b) {
    s += kHex[x >> 4];
    s += kHex[x & 15];
  }
  return s;
}

Result<std::vector<uint8_t>> BytesOfHex(std::string_view hex, size_t n, const std::string& what) {
  if (hex.size() != 2 * n)
    return InvalidArgument("transcript: " + what + " must be " + std::to_string(2 * n) + " hex digits");
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    const int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("transcript: " + what + " is not hex");
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return out;
}

// Typed field access on untrusted JSON: every miss or wrong type names the field.
struct Reader {
  const json& o;
  std::string where;
  Result<const json*> Field(const char* key) const {
    if (!o.is_object()) return InvalidArgument("transcript: " + where + " is not an object");
    auto it = o.find(key);
    if (it == o.end()) return InvalidArgument("transcript: missing field " + where + "." + key);
    return &*it;
  }
  Result<int64_t> Int(const char* key, int64_t lo, int64_t hi) const {
    auto f = Field(key);
    if (!f.ok()) return f.status();
    if (!(*f)->is_number_integer())
      return InvalidArgument("transcript: " + where + "." + key + " is not an integer");
    int64_t v = 0;
    if ((*f)->is_number_unsigned()) {
      const uint64_t u = (*f)->get<uint64_t>();
      if (u > static_cast<uint64_t>(hi))
        return InvalidArgument("transcript: " + where + "." + key + " out of range");
      v = static_cast<int64_t>(u);
    } else {
      v = (*f)->get<int64_t>();
    }
    if (v < lo || v > hi) return InvalidArgument("transcript: " + where + "." + key + " out of range");
    return v;
  }
  Result<double> Num(const char* key) const {
    auto f = Field(key);
    if (!f.ok()) return f.status();
    if (!(*f)->is_number()) return InvalidArgument("transcript: " + where + "." + key + " is not a number");
    return (*f)->get<double>();
  }
  Result<std::string> Str(const char* key) const {
    auto f = Field(key);
    if (!f.ok()) return f.status();
    if (!(*f)->is_string()) return InvalidArgument("transcript: " + where + "." + key + " is not a string");
    return (*f)->get<std::string>();
  }
  Result<Digest> Hash(const char* key) const {
    auto s = Str(key);
    if (!s.ok()) return s.status();
    auto d = Digest::FromHex(*s);
    if (!d.ok()) return InvalidArgument("transcript: " + where + "." + key + " is not 64 hex digits");
    return *d;
  }
  Result<std::vector<int32_t>> Tokens(const char* key) const {
    auto f = Field(key);
    if (!f.ok()) return f.status();
    if (!(*f)->is_array()) return InvalidArgument("transcript: " + where + "." + key + " is not an array");
    std::vector<int32_t> v;
    for (const json& x : **f) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 ||
          x.get<int64_t>() > std::numeric_limits<int32_t>::max())
        return InvalidArgument("transcript: " + where + "." + key + " holds a non-token");
      v.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
    return v;
  }
};

#define FP_ASSIGN(lhs, expr)               \
  do {                                     \
    auto r_ = (expr);                      \
    if (!r_.ok()) return r_.status();      \
    lhs = static_cast<decltype(lhs)>(*r_); \
  } while (0)

json BodyJson(const Transcript& t) {
  json commits = json::array();
  for (const TranscriptCommit& c : t.commits) {
    json proof = nullptr;
    if (c.has_proof) {
      proof = json::array();
      for (const Digest& d : c.proof) proof.push_back(d.Hex());
    }
    commits.push_back({{"position", c.position},
                       {"tree_size", c.tree_size},
                       {"root", c.root.Hex()},
                       {"last_entry", c.last_entry.Hex()},
                       {"proof", proof}});
  }
  json body = {
      {"format", "fieldprint-transcript"},
      {"version", t.version},
      {"model",
       {{"file", t.model_file},
        {"sha256", t.model_sha256.Hex()},
        {"summary", t.model_summary},
        {"n_layers", t.n_layers},
        {"d_model", t.d_model},
        {"n_heads", t.n_heads},
        {"n_kv_heads", t.n_kv_heads},
        {"vocab_size", t.vocab_size}}},
      {"engine",
       {{"device", t.device},
        {"weights", t.weights},
        {"kv_dtype", t.kv_dtype},
        {"page_size", t.page_size},
        {"gamma", t.gamma},
        {"commit_every", t.commit_every},
        {"chunk_bytes", t.chunk_bytes}}},
      {"anchor", {{"tokens", t.anchor_tokens}, {"root", t.anchor_root.Hex()}}},
      {"sampler",
       {{"temperature", t.sampler.temperature},
        {"top_k", t.sampler.top_k},
        {"top_p", t.sampler.top_p},
        {"seed", t.sampler.seed}}},
      {"prompt", t.prompt},
      {"generated", t.generated},
      {"commits", commits},
  };
  if (t.gemm != "cublas-padded") body["engine"]["gemm"] = t.gemm;  // absent: the older transcripts' value
  if (t.fingerprints) {
    const Fingerprints& f = *t.fingerprints;
    json blocks = json::array();
    for (const BlockFingerprint& b : f.blocks)
      blocks.push_back({{"row", b.row}, {"indices", b.indices}, {"values", b.values}});
    body["fingerprints"] = {{"hidden", kFingerprintKind}, {"value_dtype", "bf16"}, {"block", f.block},
                            {"top_k", f.top_k}, {"blocks", blocks}};
  }
  return body;
}

// The optional "fingerprints" object; shapes checked against the tokens (n fed rows) and d_model.
Result<Fingerprints> ParseFingerprints(const json& j, int32_t n, int32_t d_model) {
  Reader r{j, "fingerprints"};
  auto hidden = r.Str("hidden");
  if (!hidden.ok()) return hidden.status();
  auto vdt = r.Str("value_dtype");
  if (!vdt.ok()) return vdt.status();
  if (*hidden != kFingerprintKind || *vdt != "bf16")
    return InvalidArgument(std::string("transcript: fingerprints.hidden must be ") + kFingerprintKind +
                           " and value_dtype bf16");
  Fingerprints f;
  FP_ASSIGN(f.block, r.Int("block", 1, 1 << 20));
  FP_ASSIGN(f.top_k, r.Int("top_k", 1, 1 << 20));
  auto blocks = r.Field("blocks");
  if (!blocks.ok()) return blocks.status();
  if (!(*blocks)->is_array()) return InvalidArgument("transcript: fingerprints.blocks is not an array");
  if ((*blocks)->size() > (size_t{1} << 24)) return InvalidArgument("transcript: too many fingerprint blocks");
  for (size_t i = 0; i < (*blocks)->size(); ++i) {
    Reader b{(**blocks)[i], "fingerprints.blocks[" + std::to_string(i) + "]"};
    BlockFingerprint bf;
    FP_ASSIGN(bf.row, b.Int("row", 0, std::numeric_limits<int32_t>::max()));
    FP_ASSIGN(bf.indices, b.Tokens("indices"));  // non-negative int32s; range checked by Validate
    auto vals = b.Field("values");
    if (!vals.ok()) return vals.status();
    if (!(*vals)->is_array()) return InvalidArgument("transcript: " + b.where + ".values is not an array");
    for (const json& v : **vals) {
      if (!v.is_number()) return InvalidArgument("transcript: " + b.where + ".values holds a non-number");
      bf.values.push_back(static_cast<float>(v.get<double>()));
    }
    f.blocks.push_back(std::move(bf));
  }
  FP_RETURN_IF_ERROR(f.Validate(n, d_model));
  return f;
}

using EvpKey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using EvpCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

}  // namespace

std::string Transcript::CanonicalBody(std::span<const uint8_t> public_key) const {
  // nlohmann objects keep keys sorted, so dump() of the same values is the same bytes.
  return std::string(kSignDomain) + BodyJson(*this).dump() + "\n" + HexOf(public_key);
}

std::string Transcript::ToJson() const {
  json j = BodyJson(*this);
  if (signature) {
    j["signature"] = {{"algorithm", "ed25519"},
                      {"public_key", HexOf(signature->public_key)},
                      {"value", HexOf(signature->signature)}};
  }
  return j.dump(1) + "\n";
}

Result<Transcript> Transcript::Parse(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument("transcript: not valid JSON");
  Transcript t;
  Reader r{j, "transcript"};
  auto format = r.Str("format");
  if (!format.ok()) return format.status();
  if (*format != "fieldprint-transcript")
    return InvalidArgument("transcript: format is not fieldprint-transcript");
  FP_ASSIGN(t.version, r.Int("version", 0, 1000));
  if (t.version != kTranscriptVersion)
    return InvalidArgument("transcript: unsupported version " + std::to_string(t.version));
  constexpr int64_t kMaxI = std::numeric_limits<int32_t>::max();
  {
    auto f = r.Field("model");
    if (!f.ok()) return f.status();
    Reader m{**f, "model"};
    FP_ASSIGN(t.model_file, m.Str("file"));
    FP_ASSIGN(t.model_sha256, m.Hash("sha256"));
    FP_ASSIGN(t.model_summary, m.Str("summary"));
    FP_ASSIGN(t.n_layers, m.Int("n_layers", 1, kMaxI));
    FP_ASSIGN(t.d_model, m.Int("d_model", 1, kMaxI));
    FP_ASSIGN(t.n_heads, m.Int("n_heads", 1, kMaxI));
    FP_ASSIGN(t.n_kv_heads, m.Int("n_kv_heads", 1, kMaxI));
    FP_ASSIGN(t.vocab_size, m.Int("vocab_size", 1, kMaxI));
  }
  {
    auto f = r.Field("engine");
    if (!f.ok()) return f.status();
    Reader e{**f, "engine"};
    FP_ASSIGN(t.device, e.Str("device"));
    FP_ASSIGN(t.weights, e.Str("weights"));
    FP_ASSIGN(t.kv_dtype, e.Str("kv_dtype"));
    FP_ASSIGN(t.page_size, e.Int("page_size", 1, 1 << 16));
    FP_ASSIGN(t.gamma, e.Num("gamma"));
    FP_ASSIGN(t.commit_every, e.Int("commit_every", 0, kMaxI));
    FP_ASSIGN(t.chunk_bytes, e.Int("chunk_bytes", 1, int64_t{1} << 24));
    if (t.device != "cpu" && t.device != "cuda") return InvalidArgument("transcript: engine.device");
    if (t.device == "cpu" ? t.weights != "quantized" && t.weights != "f32" : t.weights != "bf16")
      return InvalidArgument("transcript: engine.weights (cpu: quantized | f32, cuda: bf16)");
    if (t.kv_dtype != "f32" && t.kv_dtype != "f16" && t.kv_dtype != "bf16")
      return InvalidArgument("transcript: engine.kv_dtype");
    if ((*f)->contains("gemm")) {
      FP_ASSIGN(t.gemm, e.Str("gemm"));
      if (t.device != "cuda" || t.gemm != "skinny")
        return InvalidArgument("transcript: engine.gemm (cuda only: skinny; absent: cublas-padded)");
    }
  }
  {
    auto f = r.Field("anchor");
    if (!f.ok()) return f.status();
    Reader a{**f, "anchor"};
    FP_ASSIGN(t.anchor_tokens, a.Tokens("tokens"));
    FP_ASSIGN(t.anchor_root, a.Hash("root"));
  }
  {
    auto f = r.Field("sampler");
    if (!f.ok()) return f.status();
    Reader s{**f, "sampler"};
    FP_ASSIGN(t.sampler.temperature, s.Num("temperature"));
    FP_ASSIGN(t.sampler.top_k, s.Int("top_k", 0, kMaxI));
    FP_ASSIGN(t.sampler.top_p, s.Num("top_p"));
    auto seed = s.Field("seed");
    if (!seed.ok()) return seed.status();
    if (!(*seed)->is_number_unsigned() && !((*seed)->is_number_integer() && (*seed)->get<int64_t>() >= 0))
      return InvalidArgument("transcript: sampler.seed is not an unsigned integer");
    t.sampler.seed = (*seed)->get<uint64_t>();
    FP_RETURN_IF_ERROR(t.sampler.Validate());
  }
  FP_ASSIGN(t.prompt, r.Tokens("prompt"));
  FP_ASSIGN(t.generated, r.Tokens("generated"));
  if (t.prompt.empty()) return InvalidArgument("transcript: empty prompt");
  auto commits = r.Field("commits");
  if (!commits.ok()) return commits.status();
  if (!(*commits)->is_array()) return InvalidArgument("transcript: commits is not an array");
  for (size_t i = 0; i < (*commits)->size(); ++i) {
    Reader c{(**commits)[i], "commits[" + std::to_string(i) + "]"};
    TranscriptCommit tc;
    FP_ASSIGN(tc.position, c.Int("position", 1, kMaxI));
    FP_ASSIGN(tc.tree_size, c.Int("tree_size", 1, kMaxI));
    FP_ASSIGN(tc.root, c.Hash("root"));
    FP_ASSIGN(tc.last_entry, c.Hash("last_entry"));
    auto proof = c.Field("proof");
    if (!proof.ok()) return proof.status();
    if ((*proof)->is_array()) {
      tc.has_proof = true;
      if ((*proof)->size() > 128) return InvalidArgument("transcript: " + c.where + ".proof too long");
      for (const json& d : **proof) {
        if (!d.is_string()) return InvalidArgument("transcript: " + c.where + ".proof holds a non-string");
        auto h = Digest::FromHex(d.get<std::string>());
        if (!h.ok()) return InvalidArgument("transcript: " + c.where + ".proof holds bad hex");
        tc.proof.push_back(*h);
      }
    } else if (!(*proof)->is_null()) {
      return InvalidArgument("transcript: " + c.where + ".proof is neither an array nor null");
    }
    t.commits.push_back(std::move(tc));
  }
  if (auto it = j.find("fingerprints"); it != j.end()) {
    const size_t fed = t.prompt.size() + (t.generated.empty() ? 0 : t.generated.size() - 1);
    if (fed > static_cast<size_t>(kMaxI)) return InvalidArgument("transcript: too many tokens");
    auto f = ParseFingerprints(*it, static_cast<int32_t>(fed), t.d_model);
    if (!f.ok()) return f.status();
    t.fingerprints = std::move(f).value();
  }
  if (auto it = j.find("signature"); it != j.end()) {
    Reader s{*it, "signature"};
    auto alg = s.Str("algorithm");
    if (!alg.ok()) return alg.status();
    if (*alg != "ed25519") return InvalidArgument("transcript: signature.algorithm must be ed25519");
    TranscriptSignature sig;
    auto pk = s.Str("public_key");
    if (!pk.ok()) return pk.status();
    FP_ASSIGN(sig.public_key, BytesOfHex(*pk, 32, "signature.public_key"));
    auto v = s.Str("value");
    if (!v.ok()) return v.status();
    FP_ASSIGN(sig.signature, BytesOfHex(*v, 64, "signature.value"));
    t.signature = std::move(sig);
  }
  return t;
}

Status Transcript::Save(const std::string& path) const {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return IoError("transcript: cannot write " + path);
  f << ToJson();
  f.close();
  if (!f) return IoError("transcript: write failed: " + path);
  return Status::Ok();
}

Result<Transcript> Transcript::Load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return IoError("transcript: cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return Parse(ss.str());
}

Result<std::vector<TranscriptCommit>> BuildTranscriptCommits(const CommitLog& log, const MerkleTree& tree) {
  FP_RETURN_IF_ERROR(log.CheckAgainst(tree));
  const int64_t page = log.page_size();
  std::vector<TranscriptCommit> out;
  for (size_t i = 0; i < log.size(); ++i) {
    const CommitEntry& e = log.entries()[i];
    TranscriptCommit c{e.position, e.tree_size, e.root, e.last_entry, false, {}};
    if (i > 0) {
      const CommitEntry& p = log.entries()[i - 1];
      // Only a full-page commit is a prefix of later trees (a provisional leaf is replaced later).
      if (static_cast<int64_t>(p.tree_size) * page == p.position) {
        MerkleTree at = tree;  // the tree as of commit i: the final one cut back, provisional leaf restored
        FP_RETURN_IF_ERROR(at.TruncateTo(e.tree_size));
        if (!(at.Root() == e.root)) FP_RETURN_IF_ERROR(at.ReplaceLast(e.last_entry));
        if (!(at.Root() == e.root))
          return DataLoss("transcript: commit " + std::to_string(i) + " not reproducible");
        auto proof = at.ConsistencyProof(p.tree_size, e.tree_size);
        if (!proof.ok()) return proof.status();
        c.has_proof = true;
        c.proof = std::move(proof).value();
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

namespace transcript_detail {

Result<Transcript> TranscriptFromRunInfo(const ModelConfig& c, const TranscriptEngineInfo& e,
                                         const std::string& model_path, const GenerationOptions& options,
                                         std::span<const int32_t> anchor_tokens, std::span<const int32_t> prompt,
                                         const GenerationStats& stats) {
  if (options.verify == VerifyMode::kOff)
    return FailedPrecondition("transcript: needs the run's commitments: use --verify sync|async|sync-full");
  if (options.inject_fault_step >= 0)
    return FailedPrecondition("transcript: a run with an injected fault replays differently; not recorded");
  if (stats.rollbacks > 0)
    return FailedPrecondition("transcript: the run rolled back; its commits are not replayable");
  Transcript t;
  auto digest = Sha256File(model_path);
  if (!digest.ok()) return digest.status();
  t.model_sha256 = *digest;
  t.model_file = std::filesystem::path(model_path).filename().string();
  t.model_summary = c.Summary();
  t.n_layers = c.n_layers;
  t.d_model = c.d_model;
  t.n_heads = c.n_heads;
  t.n_kv_heads = c.n_kv_heads;
  t.vocab_size = c.vocab_size;
  t.device = e.device;
  t.weights = e.weights;
  t.kv_dtype = e.kv_dtype;
  t.page_size = e.page_size;
  t.gamma = e.gamma;
  t.commit_every = options.commit_every;
  t.chunk_bytes = kDefaultChunkBytes;
  t.gemm = e.gemm;
  t.anchor_tokens.assign(anchor_tokens.begin(), anchor_tokens.end());
  t.anchor_root = stats.anchor_root;
  t.sampler = options.sampler;
  t.prompt.assign(prompt.begin(), prompt.end());
  t.generated = stats.tokens;
  if (stats.commit_log.page_size() != t.page_size) return Internal("transcript: commit log page size");
  auto commits = BuildTranscriptCommits(stats.commit_log, stats.commit_tree);
  if (!commits.ok()) return commits.status();
  t.commits = std::move(commits).value();
  return t;
}

}  // namespace transcript_detail

Result<Transcript> TranscriptFromRun(const LlamaEngine& engine, const std::string& model_path,
                                     const std::string& weights_mode, const GenerationOptions& options,
                                     std::span<const int32_t> anchor_tokens, std::span<const int32_t> prompt,
                                     const GenerationStats& stats) {
  if (!engine.options().gamma_per_head.empty())
    return FailedPrecondition("transcript: records one gamma, not a per-head list");
  const transcript_detail::TranscriptEngineInfo info{"cpu", weights_mode, DTypeName(engine.options().kv_dtype),
                                                    engine.options().page_size, engine.options().gamma};
  return transcript_detail::TranscriptFromRunInfo(engine.config(), info, model_path, options, anchor_tokens, prompt,
                                                  stats);
}

Status SignTranscript(Transcript& t, const std::string& pem_path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(pem_path.c_str(), "r"), &BIO_free);
  if (!bio) return IoError("transcript: cannot read key " + pem_path);
  EvpKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  if (!key) return InvalidArgument("transcript: " + pem_path + " is not a PEM private key");
  if (EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519)
    return InvalidArgument("transcript: the key is not Ed25519");
  std::vector<uint8_t> pub(32);
  size_t pub_len = pub.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), pub.data(), &pub_len) != 1 || pub_len != 32)
    return Internal("transcript: cannot read the public key");
  const std::string msg = t.CanonicalBody(pub);
  EvpCtx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::vector<uint8_t> sig(64);
  size_t sig_len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &sig_len, reinterpret_cast<const unsigned char*>(msg.data()),
                     msg.size()) != 1 ||
      sig_len != 64) {
    return Internal("transcript: Ed25519 signing failed");
  }
  t.signature = TranscriptSignature{std::move(pub), std::move(sig)};
  return Status::Ok();
}

Status CheckTranscriptSignature(const Transcript& t) {
  if (!t.signature) return Status::Ok();
  const TranscriptSignature& s = *t.signature;
  if (s.public_key.size() != 32 || s.signature.size() != 64)
    return DataLoss("transcript: malformed signature");
  EvpKey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, s.public_key.data(), 32), &EVP_PKEY_free);
  if (!key) return DataLoss("transcript: the public key is not a valid Ed25519 key");
  const std::string msg = t.CanonicalBody(s.public_key);
  EvpCtx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1)
    return Internal("transcript: cannot set up Ed25519 verification");
  if (EVP_DigestVerify(ctx.get(), s.signature.data(), 64, reinterpret_cast<const unsigned char*>(msg.data()),
                       msg.size()) != 1) {
    return DataLoss("transcript: the signature does not verify");
  }
  return Status::Ok();
}

Result<Digest> Sha256File(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return IoError("cannot read " + path);
  EvpCtx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return Internal("sha256 init failed");
  std::vector<char> buf(size_t{1} << 20);  // [1 MiB] streaming window
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<size_t>(f.gcount());
    if (n > 0 && EVP_DigestUpdate(ctx.get(), buf.data(), n) != 1) return Internal("sha256 update failed");
  }
  if (f.bad()) return IoError("read failed: " + path);
  Digest d;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), d.bytes.data(), &len) != 1 || len != 32)
    return Internal("sha256 final failed");
  return d;
}

}  // namespace fp
