// fieldprint/progress.h — progress of long loads (weights validated or widened layer by layer, layers
// uploaded to the GPU) and the one-line bar the CLI draws from it. defines: LoadProgress, RenderProgressBar,
// ProgressBar
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace fp {

// Called with (units done, units in all) as a load advances: done runs 1 .. total, once each.
using LoadProgress = std::function<void(int64_t done, int64_t total)>;

// "label [#######.............]  35% (7/20)": `width` cells, done clamped to [0, total]; total <= 0 draws an
// empty bar at 0%.
std::string RenderProgressBar(std::string_view label, int64_t done, int64_t total, int width = 30);

// Redraws the bar in place ('\r') on `out`, only when `out` is a terminal (a log file gets no bar), and ends
// the line once done == total.
class ProgressBar {
 public:
  ProgressBar(std::FILE* out, std::string label);
  LoadProgress callback();  // valid while the bar lives
  bool enabled() const { return enabled_; }

 private:
  std::FILE* out_;
  std::string label_;
  bool enabled_;
  int last_percent_ = -1;
};

}  // namespace fp
