#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "introspect/dist/nccl.h"
#include "peers.h"

namespace introspect::dist {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kFloat32: return ncclFloat32;
    case DType::kFloat64: return ncclFloat64;
    case DType::kInt64: return ncclInt64;
    case DType::kUInt8: return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// NCCL in non-blocking mode: every call returns at once and the deadline is kept by polling the stream and
// the communicator's async error, so a dead peer ends in ncclCommAbort and an error, not a hang.
class Nccl final : public Communicator {
 public:
  Nccl(Communicator& bootstrap, void* stream, double timeout_s)
      : bootstrap_(bootstrap), timeout_s_(timeout_s), peers_(exchange_peers(bootstrap)) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
      throw std::runtime_error(where() + "NCCL needs a CUDA device and none is usable");
    device_ = bootstrap.local_rank() % devices;
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    if (stream) {
      stream_ = static_cast<cudaStream_t>(stream);
    } else {
      cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      owns_stream_ = true;
    }
    cuda(cudaMalloc(&scratch_, sizeof(float)), "cudaMalloc");
    ncclUniqueId id{};
    if (bootstrap.rank() == 0) nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    bootstrap.broadcast(&id, sizeof id, DType::kUInt8, 0);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    nccl(ncclCommInitRankConfig(&comm_, bootstrap.world_size(), id, bootstrap.rank(), &config), "ncclCommInitRank");
    wait("init", 0, DType::kUInt8, /*stream_too=*/false);
  }
  ~Nccl() override {
    if (comm_) ncclCommDestroy(comm_);
    if (scratch_) cudaFree(scratch_);
    if (owns_stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return bootstrap_.rank(); }
  int world_size() const override { return bootstrap_.world_size(); }
  int local_rank() const override { return bootstrap_.local_rank(); }
  int local_size() const override { return bootstrap_.local_size(); }
  std::string backend() const override { return "nccl"; }

  void all_reduce(void* data, size_t count, DType t, ReduceOp op) override {
    nccl(ncclAllReduce(data, data, count, nccl_type(t), nccl_op(op), comm_, stream_), "all_reduce");
    wait("all_reduce", count, t);
  }
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType t, ReduceOp op) override {
    nccl(ncclReduceScatter(send, recv, recv_count, nccl_type(t), nccl_op(op), comm_, stream_), "reduce_scatter");
    wait("reduce_scatter", recv_count, t);
  }
  void all_gather(const void* send, void* recv, size_t send_count, DType t) override {
    nccl(ncclAllGather(send, recv, send_count, nccl_type(t), comm_, stream_), "all_gather");
    wait("all_gather", send_count, t);
  }
  void broadcast(void* data, size_t count, DType t, int root) override {
    nccl(ncclBroadcast(data, data, count, nccl_type(t), root, comm_, stream_), "broadcast");
    wait("broadcast", count, t);
  }
  void barrier() override { all_reduce(scratch_, 1, DType::kFloat32, ReduceOp::kSum); }
  [[noreturn]] void abort(int exit_code) override {
    if (comm_) ncclCommAbort(comm_), comm_ = nullptr;
    bootstrap_.abort(exit_code);
  }

 private:
  std::string where() const {
    return "rank " + std::to_string(bootstrap_.rank()) + "/" + std::to_string(bootstrap_.world_size()) + ": ";
  }
  void cuda(cudaError_t e, const char* what) const {
    if (e != cudaSuccess) throw CollectiveError(where() + what + ": " + cudaGetErrorString(e));
  }
  void nccl(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess && r != ncclInProgress)
      throw CollectiveError(where() + "NCCL " + what + ": " + ncclGetErrorString(r) + " (" +
                            ncclGetLastError(comm_) + ")");
  }
  void wait(const char* op, size_t count, DType t, bool stream_too = true) {
    using Clock = std::chrono::steady_clock;
    ++sequence_;
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
    for (int polls = 0;; ++polls) {
      ncclResult_t state = ncclSuccess;
      nccl(ncclCommGetAsyncError(comm_, &state), "async error query");
      nccl(state, op);
      if (state == ncclSuccess) {
        if (!stream_too) return;
        const cudaError_t q = cudaStreamQuery(stream_);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) cuda(q, op);
      }
      if (Clock::now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        throw CollectiveError(timeout_message(peers_, rank(),
                                              std::string("NCCL ") + op + " of " + std::to_string(count) + " x " +
                                                  std::to_string(dtype_size(t)) + " bytes",
                                              sequence_, timeout_s_));
      }
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  Communicator& bootstrap_;
  double timeout_s_;
  std::vector<Peer> peers_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = false;
  void* scratch_ = nullptr;
  ncclComm_t comm_ = nullptr;
  uint64_t sequence_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, void* cuda_stream, double timeout_s) {
  return std::make_unique<Nccl>(bootstrap, cuda_stream, timeout_s);
}

}  // namespace introspect::dist
