// Collectives between the ranks of one job, behind one small interface with two engines: MPI for host
// (CPU) buffers and NCCL for CUDA device buffers. Rank, world size and local rank come from the launcher
// (mpirun). Every collective has a deadline: when a peer dies or stops, the survivors get a CollectiveError
// naming the operation and the rank(s) it waited for, never a silent hang.
//
// Buffers are plain pointers (host memory for MPI, device memory for NCCL), so this header and the engines
// stay free of torch; the trainer passes tensors' data pointers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace introspect::dist {

enum class DType { kFloat32, kFloat64, kInt64, kUInt8 };
enum class ReduceOp { kSum, kMax, kMin };
size_t dtype_size(DType dtype);

// A collective that failed or ran past its deadline. The job cannot go on: the caller ends every rank with
// Communicator::abort after reporting it.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;  // index among the ranks on this host (the GPU a rank drives)
  virtual int local_size() const = 0;  // ranks on this host
  virtual std::string backend() const = 0;

  // In place: `data` holds `count` elements on every rank and ends as their reduction.
  virtual void all_reduce(void* data, size_t count, DType dtype, ReduceOp op) = 0;
  // `send` holds world_size blocks of `recv_count` elements; rank r receives the reduction of block r.
  virtual void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) = 0;
  // `send` holds `send_count` elements; `recv` gets world_size such blocks in rank order.
  virtual void all_gather(const void* send, void* recv, size_t send_count, DType dtype) = 0;
  virtual void broadcast(void* data, size_t count, DType dtype, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job (MPI_Abort); used after an error, so the others do not wait for their deadline.
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// The process's communicator. Under a launcher (OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE in the
// environment) it is MPI over MPI_COMM_WORLD, initialised here and finalised when it is destroyed; otherwise it
// is a single rank that needs no MPI. `timeout_s` bounds every collective.
std::unique_ptr<Communicator> from_environment(double timeout_s);

// ---- small typed helpers --------------------------------------------------------------------------------

double all_reduce_sum(Communicator& comm, double value);
// Every rank's string, in rank order.
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine);
// root's `text` on every rank.
std::string broadcast_string(Communicator& comm, const std::string& text, int root = 0);

}  // namespace introspect::dist
