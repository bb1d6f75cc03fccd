// progress_test.cpp — the load progress bar's text, the weights loader's progress calls (one per layer, in
// order), and that a bar on something that is not a terminal draws nothing.
#include "fieldprint/progress.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <utility>
#include <vector>

#include "engine_test_util.h"
#include "fieldprint/llama_weights.h"

namespace fp {
namespace {

TEST(Progress, RendersTheBar) {
  EXPECT_EQ(RenderProgressBar("load", 0, 4, 8), "load [........]   0% (0/4)");
  EXPECT_EQ(RenderProgressBar("load", 1, 4, 8), "load [##......]  25% (1/4)");
  EXPECT_EQ(RenderProgressBar("load", 4, 4, 8), "load [########] 100% (4/4)");
  EXPECT_EQ(RenderProgressBar("load", 9, 4, 8), "load [########] 100% (4/4)");   // clamped
  EXPECT_EQ(RenderProgressBar("load", -3, 4, 8), "load [........]   0% (0/4)");  // clamped
  EXPECT_EQ(RenderProgressBar("load", 3, 0, 8), "load [........]   0% (0/0)");   // nothing to do
  EXPECT_EQ(RenderProgressBar("x", 1, 3, 0), "x [.]  33% (1/3)");                // width at least 1
}

TEST(Progress, WeightsLoaderReportsEveryLayerInOrder) {
  ModelConfig c = testing::TinyByteModelConfig();
  c.n_layers = 3;
  auto w = LlamaWeights::Random(c, 3, WeightType::kQ8_0);
  ASSERT_TRUE(w.ok());
  const std::vector<uint8_t> bytes = testing::WriteGguf(*w);
  const auto path =
      std::filesystem::temp_directory_path() / ("fp_progress_" + std::to_string(::getpid()) + ".gguf");
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  std::vector<std::pair<int64_t, int64_t>> calls;
  auto loaded = LlamaWeights::Load(path.string(), WeightStorage::kQuantized,
                                   [&](int64_t done, int64_t total) { calls.emplace_back(done, total); });
  std::filesystem::remove(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const std::vector<std::pair<int64_t, int64_t>> want{{1, 3}, {2, 3}, {3, 3}};
  EXPECT_EQ(calls, want);
}

TEST(Progress, NoBarOnAFile) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ProgressBar bar(f, "load");
  EXPECT_FALSE(bar.enabled());
  auto cb = bar.callback();
  for (int i = 1; i <= 5; ++i) cb(i, 5);
  EXPECT_EQ(std::ftell(f), 0L);
  std::fclose(f);
}

}  // namespace
}  // namespace fp
