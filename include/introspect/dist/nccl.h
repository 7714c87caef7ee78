// The NCCL engine of dist::Communicator, for CUDA device buffers. It lives in its own library
// (introspect_nccl, built when the toolkit has NCCL) so that binaries which never touch a GPU do not need
// libnccl at load time.
#pragma once

#include <memory>

#include "introspect/dist/communicator.h"

namespace introspect::dist {

// NCCL over the ranks of `bootstrap`, which broadcasts rank 0's unique id. Uses device
// local_rank % device_count and the given cudaStream_t (nullptr: a stream of its own). Collectives are enqueued
// and then waited for with the deadline; on timeout the NCCL communicator is aborted and CollectiveError
// names the rank(s) waited for. Throws std::runtime_error when there is no usable GPU.
std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, void* cuda_stream, double timeout_s);

}  // namespace introspect::dist
