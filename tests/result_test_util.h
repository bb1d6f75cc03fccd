// result_test_util.h — Val(): unwraps a Result in a test; an error fails the test (gtest reports the exception)
// instead of crashing on .value().
#pragma once

#include <stdexcept>
#include <utility>

#include "fieldprint/status.h"

namespace fp::testing {

template <typename T>
T Val(Result<T> r) {
  if (!r.ok()) throw std::runtime_error(r.status().ToString());
  return std::move(r).value();
}

}  // namespace fp::testing
