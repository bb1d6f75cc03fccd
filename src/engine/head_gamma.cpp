// Per-head gamma: parsing the CLI list and resolving engine options (head_gamma.h). Parsing goes through
// std::from_chars so "1e-2", "-0.5" and "inf" are read the same on every locale; non-finite values are
// refused because one inf/nan gamma turns the whole head's softmax into nan.
#include "fieldprint/head_gamma.h"

#include <charconv>
#include <cmath>
#include <string>

namespace fp {

Result<std::vector<float>> ParseGammaList(std::string_view text) {
  std::vector<float> out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);  // "0.5, 1" reads as "0.5,1"
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    const std::string where = "gamma item " + std::to_string(out.size() + 1) + " '" + std::string(item) + "'";
    if (item.empty())
      return InvalidArgument(where + " is empty (expected a number or a comma-separated list)");
    float v = 0.f;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || end != item.data() + item.size()) {
      return InvalidArgument(where + " is not a number");
    }
    if (!std::isfinite(v)) return InvalidArgument(where + " is not finite");
    out.push_back(v);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

Result<std::vector<float>> ResolveHeadGammas(float gamma, std::span<const float> per_head, int n_heads) {
  if (n_heads <= 0) return InvalidArgument("gamma: n_heads must be positive");
  if (per_head.empty()) {
    if (!std::isfinite(gamma)) return InvalidArgument("gamma must be finite");
    return std::vector<float>(static_cast<size_t>(n_heads), gamma);
  }
  if (per_head.size() != static_cast<size_t>(n_heads)) {
    return InvalidArgument("gamma: " + std::to_string(per_head.size()) + " values for " +
                           std::to_string(n_heads) + " heads (give one value for every head, or exactly " +
                           std::to_string(n_heads) + ")");
  }
  for (size_t h = 0; h < per_head.size(); ++h) {
    if (!std::isfinite(per_head[h]))
      return InvalidArgument("gamma of head " + std::to_string(h) + " must be finite");
  }
  return std::vector<float>(per_head.begin(), per_head.end());
}

bool IsUniform(std::span<const float> values) {
  for (float v : values) {
    if (v != values.front()) return false;
  }
  return true;
}

}  // namespace fp
