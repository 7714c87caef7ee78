// The safetensors format, torch-free: header parsing with full validation, memory mapping, and writing.
// Only safetensors is ever loaded (no pickle), so a checkpoint cannot run code.
// Layout: u64 little-endian header length N, N bytes of JSON header, then the data buffer. Each tensor's
// data_offsets are relative to the start of the data buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace introspect::io {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "F32", "BF16", ...

// Raised for any malformed or unreadable checkpoint; the message names the file and, when it applies, the tensor.
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;  // absolute byte offset in the file
  uint64_t end;
  uint64_t numel() const;
};

struct Header {
  std::vector<TensorInfo> tensors;  // sorted by offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;
  const TensorInfo* find(const std::string& name) const;
};

// Parses and validates the header of a whole safetensors file held in `data` (`size` bytes): header length
// within the file and below 100 MB, valid JSON, known dtypes, shapes that agree with the byte ranges, ranges
// inside the data buffer, no overlaps and no gaps (as the reference implementation requires).
Header parse_header(const uint8_t* data, size_t size, const std::string& file_name);

// A read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  // Faults in [offset, offset+len) in one call, rather than a page fault per 4 KB on first touch.
  void prefetch(uint64_t offset, uint64_t len) const;
  // Tells the kernel the pages of [offset, offset+len) are no longer needed (keeps peak RSS low while loading).
  void release(uint64_t offset, uint64_t len) const;

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// One safetensors file: its map and validated header.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  const Header& header() const { return header_; }
  const MappedFile& map() const { return map_; }
  const uint8_t* bytes(const TensorInfo& t) const { return map_.data() + t.begin; }
  std::string name() const { return map_.path().string(); }

 private:
  MappedFile map_;
  Header header_;
};

// A tensor to write: raw little-endian bytes in the given dtype and shape.
struct TensorBytes {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  uint64_t nbytes;
};

// Writes one safetensors file atomically (temporary file, fsync, rename).
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes `tensors` into `dir` as model.safetensors, or, when they exceed `max_shard_bytes`, as
// model-0000K-of-0000N.safetensors shards plus model.safetensors.index.json (HF's layout). Returns the files.
std::vector<std::filesystem::path> write_sharded(const std::filesystem::path& dir,
                                                 const std::vector<TensorBytes>& tensors, uint64_t max_shard_bytes);

// Where each tensor of a checkpoint folder lives: model.safetensors.index.json's weight_map when present,
// else every *.safetensors file's header.
std::map<std::string, std::filesystem::path> checkpoint_weight_map(const std::filesystem::path& dir);

}  // namespace introspect::io
