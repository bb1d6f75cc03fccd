// core/progress.cpp — the load progress bar (progress.h).
#include "fieldprint/progress.h"

#include <unistd.h>

#include <algorithm>

namespace fp {

std::string RenderProgressBar(std::string_view label, int64_t done, int64_t total, int width) {
  width = std::max(width, 1);
  const int64_t d = total > 0 ? std::clamp<int64_t>(done, 0, total) : 0;
  const int filled = total > 0 ? static_cast<int>(d * width / total) : 0;
  const int percent = total > 0 ? static_cast<int>(d * 100 / total) : 0;
  std::string s(label);
  s += " [";
  s.append(static_cast<size_t>(filled), '#');
  s.append(static_cast<size_t>(width - filled), '.');
  s += "] ";
  const std::string pct = std::to_string(percent);
  s.append(3 - std::min<size_t>(3, pct.size()), ' ');
  s += pct + "% (" + std::to_string(d) + "/" + std::to_string(std::max<int64_t>(total, 0)) + ")";
  return s;
}

ProgressBar::ProgressBar(std::FILE* out, std::string label)
    : out_(out), label_(std::move(label)), enabled_(out != nullptr && isatty(fileno(out)) != 0) {}

LoadProgress ProgressBar::callback() {
  return [this](int64_t done, int64_t total) {
    if (!enabled_) return;
    const int percent = total > 0 ? static_cast<int>(std::clamp<int64_t>(done, 0, total) * 100 / total) : 0;
    if (percent == last_percent_ && done != total) return;  // redraw only when the number changes
    last_percent_ = percent;
    std::fprintf(out_, "\r%s", RenderProgressBar(label_, done, total).c_str());
    if (done >= total) std::fputc('\n', out_);
    std::fflush(out_);
  };
}

}  // namespace fp
