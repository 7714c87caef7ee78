#include "introspect/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

namespace introspect::io {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4},         {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8},         {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},           {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1}, {DType::kF8E4M3, "F8_E4M3", 1}, {DType::kF8E5M2, "F8_E5M2", 1},
};

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw SafetensorsError(file + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& file, const std::string& tensor, const std::string& what) {
  throw SafetensorsError(file + ": tensor '" + tensor + "': " + what);
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void write_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t json_u64(const json& j, const std::string& file, const std::string& tensor, const char* what) {
  if (!j.is_number_unsigned()) {
    if (j.is_number_integer() && j.get<int64_t>() >= 0) return j.get<uint64_t>();
    fail_tensor(file, tensor, std::string(what) + " must be non-negative integers");
  }
  return j.get<uint64_t>();
}

std::string json_header(const std::vector<TensorBytes>& tensors, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned, as HF's writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void fsync_path(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

size_t dtype_size(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.size;
  return 0;
}

const char* dtype_name(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.name;
  return "?";
}

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

const TensorInfo* Header::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

Header parse_header(const uint8_t* data, size_t size, const std::string& file) {
  if (size < 8) fail(file, "truncated file: " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  const uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderBytes) fail(file, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > size - 8) {
    fail(file, "header length " + std::to_string(n) + " runs beyond the end of the file (" + std::to_string(size) +
                   " bytes): truncated or not a safetensors file");
  }
  json j;
  try {
    j = json::parse(data + 8, data + 8 + n);
  } catch (const json::exception& e) {
    fail(file, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(file, "header is not a JSON object");

  Header header;
  header.data_start = 8 + n;
  const uint64_t data_size = size - header.data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(file, "__metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(file, "__metadata__ value for '" + m.key() + "' is not a string");
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_tensor(file, name, "entry is not a JSON object");
    const auto dt = v.find("dtype");
    const auto sh = v.find("shape");
    const auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail_tensor(file, name, "missing or non-string dtype");
    if (sh == v.end() || !sh->is_array()) fail_tensor(file, name, "missing or non-array shape");
    if (off == v.end() || !off->is_array() || off->size() != 2) {
      fail_tensor(file, name, "data_offsets must be an array [begin, end]");
    }
    TensorInfo t;
    t.name = name;
    const std::string dname = dt->get<std::string>();
    const auto entry = std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                    [&](const DTypeEntry& e) { return dname == e.name; });
    if (entry == std::end(kDTypes)) fail_tensor(file, name, "unknown dtype '" + dname + "'");
    t.dtype = entry->dtype;
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      const uint64_t dim = json_u64(d, file, name, "shape dimensions");
      if (dim > static_cast<uint64_t>(INT64_MAX) || (dim != 0 && numel > UINT64_MAX / dim / 8)) {
        fail_tensor(file, name, "shape is too large");
      }
      numel *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t begin = json_u64((*off)[0], file, name, "data_offsets");
    const uint64_t end = json_u64((*off)[1], file, name, "data_offsets");
    if (begin > end) fail_tensor(file, name, "data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
    if (end > data_size) {
      fail_tensor(file, name, "data_offsets end " + std::to_string(end) + " is beyond the data buffer (" +
                                  std::to_string(data_size) + " bytes): truncated file or bad offsets");
    }
    if (end - begin != numel * entry->size) {
      fail_tensor(file, name, "byte range of " + std::to_string(end - begin) + " bytes does not match shape x " +
                                  dname + " (" + std::to_string(numel * entry->size) + " bytes)");
    }
    t.begin = header.data_start + begin;
    t.end = header.data_start + end;
    header.tensors.push_back(std::move(t));
  }
  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = header.data_start;
  for (const auto& t : header.tensors) {
    if (t.begin < cursor) fail_tensor(file, t.name, "data overlaps the previous tensor");
    if (t.begin > cursor) fail_tensor(file, t.name, "gap of " + std::to_string(t.begin - cursor) + " bytes before its data");
    cursor = t.end;
  }
  if (cursor != size) {
    fail(file, std::to_string(size - cursor) + " bytes after the last tensor are not covered by the header");
  }
  return header;
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SafetensorsError(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw SafetensorsError(path.string() + ": cannot stat: " + std::strerror(err));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw SafetensorsError(path.string() + ": cannot mmap: " + std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::prefetch(uint64_t offset, uint64_t len) const {
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t first = offset / page * page;
  if (len == 0) return;
  // Older kernels reject POPULATE_READ; WILLNEED still starts readahead.
  if (::madvise(const_cast<uint8_t*>(data_) + first, offset + len - first, MADV_POPULATE_READ) != 0) {
    ::madvise(const_cast<uint8_t*>(data_) + first, offset + len - first, MADV_WILLNEED);
  }
}

void MappedFile::release(uint64_t offset, uint64_t len) const {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t first = (offset + page - 1) / page * page;  // only whole pages inside the range
  const uint64_t last = (offset + len) / page * page;
  if (last > first) ::madvise(const_cast<uint8_t*>(data_) + first, last - first, MADV_DONTNEED);
}

SafetensorsFile::SafetensorsFile(const fs::path& path)
    : map_(path), header_(parse_header(map_.data(), map_.size(), path.string())) {}

void write_safetensors(const fs::path& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) throw SafetensorsError(path.string() + ": duplicate tensor '" + t.name + "'");
    uint64_t numel = 1;
    for (auto d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel * dtype_size(t.dtype) != t.nbytes) {
      throw SafetensorsError(path.string() + ": tensor '" + t.name + "': byte size does not match its shape");
    }
  }
  const std::string header = json_header(tensors, metadata);
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    uint8_t len[8];
    write_u64_le(len, header.size());
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& t : tensors) out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes));
    out.flush();
    if (!out) throw SafetensorsError(tmp.string() + ": write failed: " + std::strerror(errno));
  }
  fsync_path(tmp, O_RDONLY);
  fs::rename(tmp, path);
  fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path(), O_RDONLY | O_DIRECTORY);
}

std::vector<fs::path> write_sharded(const fs::path& dir, const std::vector<TensorBytes>& tensors,
                                    uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  std::vector<std::vector<TensorBytes>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (const auto& t : tensors) {
    if (!shards.back().empty() && shard_bytes + t.nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += t.nbytes;
    total += t.nbytes;
  }
  std::vector<fs::path> files;
  if (shards.size() == 1) {
    files.push_back(dir / "model.safetensors");
    write_safetensors(files.back(), shards[0]);
    return files;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    files.push_back(dir / name);
    write_safetensors(files.back(), shards[i]);
    for (const auto& t : shards[i]) weight_map[t.name] = name;
  }
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::ofstream(index_path.string() + ".tmp") << index.dump(2) << "\n";
  fs::rename(index_path.string() + ".tmp", index_path);
  files.push_back(index_path);
  return files;
}

std::map<std::string, fs::path> checkpoint_weight_map(const fs::path& dir) {
  std::map<std::string, fs::path> map;
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    json index;
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      throw SafetensorsError(index_path.string() + ": not valid JSON: " + e.what());
    }
    const auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) throw SafetensorsError(index_path.string() + ": no weight_map object");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) {
        throw SafetensorsError(index_path.string() + ": weight_map entry '" + it.key() + "' is not a file name");
      }
      map[it.key()] = dir / it.value().get<std::string>();
    }
    return map;
  }
  std::vector<fs::path> files;
  if (fs::is_directory(dir)) {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.push_back(e.path());
  }
  if (files.empty()) throw SafetensorsError(dir.string() + ": no *.safetensors file (only safetensors is loaded)");
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const SafetensorsFile st(f);
    for (const auto& t : st.header().tensors) map[t.name] = f;
  }
  return map;
}

}  // namespace introspect::io
