// The safetensors reader and writer, torch-free: round trips and every malformed-file case.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "introspect/io/safetensors.h"
#include "test_util.h"

using namespace introspect::io;
using introspect::testing::ScratchDir;
using ::testing::HasSubstr;

namespace {

// A file from a raw JSON header and data buffer.
std::string make_file(const std::string& header, const std::string& data, uint64_t declared_len = UINT64_MAX) {
  const uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string parse_error(const std::string& bytes) {
  try {
    parse_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "ckpt.safetensors");
  } catch (const SafetensorsError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a SafetensorsError";
  return "";
}

const std::string kTwoTensors =
    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}})";

}  // namespace

TEST(SafetensorsHeader, ParsesValidFile) {
  const std::string file = make_file(kTwoTensors, std::string(12, 'x'));
  const Header h = parse_header(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "f");
  ASSERT_EQ(h.tensors.size(), 2u);
  const TensorInfo* b = h.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kBF16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(b->begin, 8 + kTwoTensors.size() + 8);
  EXPECT_EQ(h.find("zzz"), nullptr);
}

TEST(SafetensorsHeader, TruncatedFile) {
  EXPECT_THAT(parse_error("abc"), HasSubstr("ckpt.safetensors: truncated file"));
  const std::string file = make_file(kTwoTensors, std::string(12, 'x'));
  EXPECT_THAT(parse_error(file.substr(0, file.size() - 3)), HasSubstr("tensor 'b': data_offsets end 12 is beyond"));
}

TEST(SafetensorsHeader, HeaderLengthBeyondFile) {
  EXPECT_THAT(parse_error(make_file(kTwoTensors, "", 1'000'000)), HasSubstr("runs beyond the end of the file"));
  EXPECT_THAT(parse_error(make_file("{}", "", 1ull << 40)), HasSubstr("exceeds the 100 MB limit"));
}

TEST(SafetensorsHeader, OverlappingOffsets) {
  const std::string h =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_THAT(parse_error(make_file(h, std::string(8, 'x'))), HasSubstr("overlaps"));
}

TEST(SafetensorsHeader, OutOfRangeAndReversedOffsets) {
  EXPECT_THAT(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "xxxx")),
              HasSubstr("begin 4 > end 0"));
  EXPECT_THAT(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", "xxxx")),
              HasSubstr("non-negative"));
}

TEST(SafetensorsHeader, GapsAndTrailingBytes) {
  EXPECT_THAT(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "xxxxxxxx")),
              HasSubstr("gap of 4 bytes"));
  EXPECT_THAT(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "xxxxxxxx")),
              HasSubstr("4 bytes after the last tensor"));
}

TEST(SafetensorsHeader, UnknownDtypeNamesTheTensor) {
  EXPECT_THAT(parse_error(make_file(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", "xxxx")),
              HasSubstr("tensor 'w': unknown dtype 'F12'"));
}

TEST(SafetensorsHeader, ShapeDisagreesWithByteRange) {
  EXPECT_THAT(parse_error(make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "xxxxxxxx")),
              HasSubstr("does not match shape"));
  EXPECT_THAT(parse_error(make_file(
                  R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", "xxxxxxxx")),
              HasSubstr("too large"));
}

TEST(SafetensorsHeader, MalformedJson) {
  EXPECT_THAT(parse_error(make_file("{not json", "")), HasSubstr("not valid JSON"));
  EXPECT_THAT(parse_error(make_file("[1,2]", "")), HasSubstr("not a JSON object"));
  EXPECT_THAT(parse_error(make_file(R"({"w":{"dtype":"F32","shape":[1]}})", "xxxx")), HasSubstr("data_offsets"));
  EXPECT_THAT(parse_error(make_file(R"({"__metadata__":{"k":1}})", "")), HasSubstr("__metadata__"));
}

TEST(SafetensorsFileIo, WriteThenReadBack) {
  ScratchDir dir;
  const std::vector<float> a{1.5f, -2.0f, 3.25f};
  const std::vector<uint16_t> b{0x3f80, 0x4000};
  write_safetensors(dir.path() / "m.safetensors",
                    {{"a", DType::kF32, {3}, a.data(), 12}, {"b", DType::kBF16, {2, 1}, b.data(), 4}},
                    {{"format", "pt"}});
  const SafetensorsFile f(dir.path() / "m.safetensors");
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  EXPECT_EQ(f.header().data_start % 8, 0u) << "data buffer is 8-byte aligned";
  const TensorInfo* ta = f.header().find("a");
  ASSERT_NE(ta, nullptr);
  std::vector<float> back(3);
  std::memcpy(back.data(), f.bytes(*ta), 12);
  EXPECT_EQ(back, a);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "m.safetensors.tmp"));
}

TEST(SafetensorsFileIo, ShardedWriteHasIndexAndWeightMap) {
  ScratchDir dir;
  std::vector<float> buf(100, 1.0f);
  std::vector<TensorBytes> tensors;
  for (int i = 0; i < 5; ++i) tensors.push_back({"t" + std::to_string(i), DType::kF32, {25}, buf.data(), 100});
  const auto files = write_sharded(dir.path(), tensors, 250);
  ASSERT_EQ(files.size(), 4u);  // 3 shards of <= 2 tensors + the index
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "model-00001-of-00003.safetensors"));
  const auto map = checkpoint_weight_map(dir.path());
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map.at("t4").filename(), "model-00003-of-00003.safetensors");
  const auto index = nlohmann::json::parse(introspect::testing::read_file(dir.path() / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 500);
}

TEST(SafetensorsFileIo, SingleFileWhenUnderTheShardLimit) {
  ScratchDir dir;
  const float x = 1;
  const auto files = write_sharded(dir.path(), {{"x", DType::kF32, {1}, &x, 4}}, 1000);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename(), "model.safetensors");
  EXPECT_EQ(checkpoint_weight_map(dir.path()).at("x").filename(), "model.safetensors");
}

TEST(SafetensorsFileIo, MissingCheckpointIsAClearError) {
  ScratchDir dir;
  try {
    checkpoint_weight_map(dir.path());
    FAIL();
  } catch (const SafetensorsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no *.safetensors file"));
  }
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  try {
    checkpoint_weight_map(dir.path());
    FAIL();
  } catch (const SafetensorsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("weight_map entry 'a'"));
  }
}

TEST(SafetensorsFileIo, FileThatCannotBeOpened) {
  try {
    SafetensorsFile f("/nonexistent/x.safetensors");
    FAIL();
  } catch (const SafetensorsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/x.safetensors: cannot open"));
  }
}
