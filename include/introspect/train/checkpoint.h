// Checkpoint folders that become complete atomically (llm.c's rule): the files are written into a temporary
// folder, every file and the folder are fsynced, the folder is renamed to step_N, and a DONE marker comes last.
// A folder without DONE is never picked, so a crash or a full disk mid-write leaves the previous one in charge.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>

namespace introspect::train {

struct CheckpointRef {
  int64_t step = 0;
  std::filesystem::path dir;
};

// Writes root/step_<step>/ through `fill`, which writes its files into the folder it is given. On any error the
// partial folder is removed and the error is rethrown; existing checkpoints are untouched.
std::filesystem::path write_checkpoint(const std::filesystem::path& root, int64_t step,
                                       const std::function<void(const std::filesystem::path&)>& fill);

// The complete checkpoint with the highest step under root, if any.
std::optional<CheckpointRef> latest_checkpoint(const std::filesystem::path& root);

// Keeps the newest `keep_last` complete checkpoints and removes the rest, and any leftover partial folders.
void prune_checkpoints(const std::filesystem::path& root, int64_t keep_last);

// fsync of a file or folder; throws std::system_error naming the path.
void fsync_path(const std::filesystem::path& path);

}  // namespace introspect::train
