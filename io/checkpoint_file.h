// Layout-free checkpoint container (schema 1.0, docs/data-format.md): float32 tensors
// stored under their logical names as HDF5 paths ("model/...", "optim/exp_avg/..."),
// scalars as attributes and byte blobs as uint8 datasets under /meta. The writer fills
// "<path>.tmp" and renames it on commit(), so a reader never sees half a checkpoint.
// Names are '/'-separated paths without empty, "." or ".." parts; "meta" is reserved.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/hdf5.h"

namespace castor::io {

inline constexpr const char* kCheckpointFormat = "checkpoint";
inline constexpr const char* kCheckpointSchemaVersion = "1.0";
inline constexpr int kCheckpointSchemaMajor = 1;

class CheckpointWriter {
 public:
  // deflate_level 0 = uncompressed tensors (default), 1..9 = shuffle + gzip.
  explicit CheckpointWriter(std::string path, int deflate_level = 0);
  ~CheckpointWriter() = default;  // without commit(): out_ removes the temporary file
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Tensor: float32 dataset /<name> of the given shape (empty shape = scalar tensor).
  void write_tensor(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  // Scalars: attribute <basename> on group /meta/<dirname> ("step" -> /meta@step,
  // "loader/epoch" -> /meta/loader@epoch).
  void write_int64(const std::string& name, int64_t value);
  void write_double(const std::string& name, double value);
  void write_string(const std::string& name, const std::string& value);
  // Blob (e.g. RNG state): uint8 dataset /meta/<name>.
  void write_bytes(const std::string& name, std::span<const uint8_t> bytes);
  // Closes the file and renames "<path>.tmp" to path. Nothing may be written after.
  void commit();

  const std::string& path() const { return out_.path(); }

 private:
  void claim(const std::string& name);  // validates and rejects a second write of a name

  StagedFile out_;  // "<path>.tmp" until commit()
  int deflate_level_;
  std::vector<std::string> names_;
};

class CheckpointReader {
 public:
  // Opens and validates castor_format = "checkpoint" and schema major 1.
  explicit CheckpointReader(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::string& schema_version() const { return schema_version_; }

  // True when a tensor, scalar or blob of this name exists.
  bool has(const std::string& name) const;
  std::vector<int64_t> tensor_shape(const std::string& name) const;
  // Throws, naming the file, the tensor and both shapes, when the stored shape differs.
  void read_tensor(const std::string& name, const std::vector<int64_t>& expected_shape, float* out) const;
  int64_t read_int64(const std::string& name) const;
  double read_double(const std::string& name) const;
  std::string read_string(const std::string& name) const;
  std::vector<uint8_t> read_bytes(const std::string& name) const;
  // Names (full, sorted) of all tensors under group ("" = every tensor, e.g. "model" or
  // "optim/exp_avg"); empty when the group does not exist.
  std::vector<std::string> tensor_names(const std::string& group = "") const;

 private:
  bool has_tensor(const std::string& name) const;
  Group scalar_group(const std::string& name, std::string* attr) const;

  File file_;
  std::string schema_version_;
};

// "<dir>/step_00001000.h5" for step 1000 (at least 8 digits).
std::string checkpoint_path(const std::string& dir, int64_t step);
// The checkpoint step_<digits>.h5 in dir with the largest step ("*.tmp" and other names
// ignored), as a path; "" when there is none or dir does not exist.
std::string latest_checkpoint(const std::string& dir);

}  // namespace castor::io
