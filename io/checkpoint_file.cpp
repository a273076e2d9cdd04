// Checkpoint container: writer (temporary file + rename on commit), reader with shape
// checks, and discovery of the newest step_XXXXXXXX.h5 in a directory.
#include "io/checkpoint_file.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

namespace castor::io {

namespace {

std::vector<std::string> split_name(const std::string& name) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (true) {
    const size_t j = name.find('/', i);
    parts.push_back(name.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return parts;
}

void validate_name(const std::string& file, const std::string& name) {
  CASTOR_CHECK(!name.empty(), file, ": empty checkpoint entry name");
  for (const std::string& part : split_name(name))
    CASTOR_CHECK(!part.empty() && part != "." && part != "..", file, ": bad checkpoint entry name \"", name,
                 "\" (empty, '.' or '..' path component)");
}

bool is_meta(const std::string& name) { return name == "meta" || name.rfind("meta/", 0) == 0; }

// "a/b/c" -> ("/meta/a/b", "c"); "step" -> ("/meta", "step").
std::pair<std::string, std::string> scalar_location(const std::string& name) {
  const size_t slash = name.rfind('/');
  if (slash == std::string::npos) return {"/meta", name};
  return {"/meta/" + name.substr(0, slash), name.substr(slash + 1)};
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void collect_tensors(const Group& g, const std::string& prefix, bool skip_meta, std::vector<std::string>* out) {
  for (const std::string& child : g.children()) {
    if (skip_meta && child == "meta") continue;
    const std::string name = prefix.empty() ? child : prefix + "/" + child;
    if (g.is_group(child)) {
      collect_tensors(g.open_group(child), name, false, out);
    } else if (g.is_dataset(child)) {
      out->push_back(name);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------- writer

CheckpointWriter::CheckpointWriter(std::string path, int deflate_level)
    : out_(std::move(path)), deflate_level_(deflate_level) {
  CASTOR_CHECK(deflate_level_ >= 0 && deflate_level_ <= 9, out_.path(), ": deflate level must be 0..9, got ",
               deflate_level_);
  out_.create();
  Group root = out_.file().root();  // on a throw below, out_ removes the temporary file
  write_castor_header(root, kCheckpointFormat, kCheckpointSchemaVersion);
  root.create_group("meta");
}

void CheckpointWriter::claim(const std::string& name) {
  CASTOR_CHECK(!out_.committed(), path(), ": write of ", name, " after commit()");
  validate_name(path(), name);
  CASTOR_CHECK(std::find(names_.begin(), names_.end(), name) == names_.end(), path(), ": ", name, " written twice");
  names_.push_back(name);
}

void CheckpointWriter::write_tensor(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  claim(name);
  CASTOR_CHECK(!is_meta(name), path(), ": tensor name ", name, " uses the reserved group meta");
  DatasetOptions d;
  d.deflate_level = deflate_level_;
  out_.file().root().write_array<float>(name, shape, data, d);
}

void CheckpointWriter::write_int64(const std::string& name, int64_t value) {
  claim(name);
  const auto [group, attr] = scalar_location(name);
  out_.file().root().require_group(group).write_attr_int64(attr, value);
}

void CheckpointWriter::write_double(const std::string& name, double value) {
  claim(name);
  const auto [group, attr] = scalar_location(name);
  out_.file().root().require_group(group).write_attr_double(attr, value);
}

void CheckpointWriter::write_string(const std::string& name, const std::string& value) {
  claim(name);
  const auto [group, attr] = scalar_location(name);
  out_.file().root().require_group(group).write_attr_string(attr, value);
}

void CheckpointWriter::write_bytes(const std::string& name, std::span<const uint8_t> bytes) {
  claim(name);
  out_.file().root().write_vector<uint8_t>("/meta/" + name, bytes);
}

void CheckpointWriter::commit() {
  CASTOR_CHECK(!out_.committed(), path(), ": commit() called twice");
  out_.commit();
}

// ---------------------------------------------------------------------------- reader

CheckpointReader::CheckpointReader(const std::string& path) : file_(File::open_read(path)) {
  schema_version_ = check_castor_header(file_.root(), kCheckpointFormat, kCheckpointSchemaMajor);
}

bool CheckpointReader::has_tensor(const std::string& name) const {
  return !is_meta(name) && file_.root().is_dataset(name);
}

Group CheckpointReader::scalar_group(const std::string& name, std::string* attr) const {
  const auto [group, a] = scalar_location(name);
  *attr = a;
  const Group root = file_.root();
  CASTOR_CHECK(root.is_group(group), path(), ": value ", name, " not found (no group ", group, ")");
  return root.open_group(group);
}

bool CheckpointReader::has(const std::string& name) const {
  validate_name(path(), name);
  if (has_tensor(name)) return true;
  const Group root = file_.root();
  if (root.is_dataset("/meta/" + name)) return true;
  const auto [group, attr] = scalar_location(name);
  return root.is_group(group) && root.open_group(group).has_attr(attr);
}

std::vector<int64_t> CheckpointReader::tensor_shape(const std::string& name) const {
  validate_name(path(), name);
  CASTOR_CHECK(has_tensor(name), path(), ": tensor ", name, " not found");
  return file_.root().open_dataset(name).shape();
}

void CheckpointReader::read_tensor(const std::string& name, const std::vector<int64_t>& expected_shape,
                                   float* out) const {
  validate_name(path(), name);
  CASTOR_CHECK(has_tensor(name), path(), ": tensor ", name, " not found");
  const Dataset d = file_.root().open_dataset(name);
  const std::vector<int64_t> shape = d.shape();
  CASTOR_CHECK(shape == expected_shape, path(), ": tensor ", name, ": shape ", shape_string(shape),
               " in file, expected ", shape_string(expected_shape));
  CASTOR_CHECK(d.is_float(), d.where(), ": tensor ", name, " is not floating point");
  d.read(out, d.size());
}

int64_t CheckpointReader::read_int64(const std::string& name) const {
  validate_name(path(), name);
  std::string attr;
  return scalar_group(name, &attr).read_attr_int64(attr);
}

double CheckpointReader::read_double(const std::string& name) const {
  validate_name(path(), name);
  std::string attr;
  return scalar_group(name, &attr).read_attr_double(attr);
}

std::string CheckpointReader::read_string(const std::string& name) const {
  validate_name(path(), name);
  std::string attr;
  return scalar_group(name, &attr).read_attr_string(attr);
}

std::vector<uint8_t> CheckpointReader::read_bytes(const std::string& name) const {
  validate_name(path(), name);
  const Group root = file_.root();
  CASTOR_CHECK(root.is_dataset("/meta/" + name), path(), ": blob ", name, " not found (no dataset /meta/", name, ")");
  return root.read_vector<uint8_t>("/meta/" + name);
}

std::vector<std::string> CheckpointReader::tensor_names(const std::string& group) const {
  std::vector<std::string> out;
  const Group root = file_.root();
  if (group.empty()) {
    collect_tensors(root, "", true, &out);
  } else {
    validate_name(path(), group);
    if (is_meta(group) || !root.is_group(group)) return out;
    collect_tensors(root.open_group(group), group, false, &out);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------- discovery

std::string checkpoint_path(const std::string& dir, int64_t step) {
  CASTOR_CHECK(step >= 0, dir, ": negative checkpoint step ", step);
  char name[48];
  std::snprintf(name, sizeof(name), "step_%08lld.h5", static_cast<long long>(step));
  return (std::filesystem::path(dir) / name).string();
}

std::string latest_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return "";
  CASTOR_CHECK(fs::is_directory(dir, ec), dir, ": not a directory (looking for checkpoints)");
  std::string best;
  long long best_step = -1;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() < 9 || name.rfind("step_", 0) != 0 || name.compare(name.size() - 3, 3, ".h5") != 0) continue;
    const std::string digits = name.substr(5, name.size() - 8);
    if (digits.empty() || digits.size() > 18 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    std::error_code fec;
    if (!it->is_regular_file(fec)) continue;
    const long long step = std::stoll(digits);
    if (step > best_step) {
      best_step = step;
      best = it->path().string();
    }
  }
  CASTOR_CHECK(!ec, dir, ": cannot list directory: ", ec.message());
  return best;
}

}  // namespace castor::io
