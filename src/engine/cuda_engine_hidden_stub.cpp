// engine/cuda_engine_hidden_stub.cpp — CudaLlama::ForwardHidden in a build without CUDA (the rest of the stub
// is cuda_engine_stub.cpp): Unimplemented, never reached since no CudaLlama exists there.
#if !defined(FIELDPRINT_HAVE_CUDA)
#include "fieldprint/cuda_engine.h"

namespace fp {

Status CudaLlama::ForwardHidden(SeqId, std::span<const int32_t>, std::span<const int32_t>, std::vector<float>*) {
  return Unimplemented("this build has no CUDA");
}

}  // namespace fp
#endif
