// Thin RAII layer over the HDF5 C API: File, Group, Dataset, scalar and string-list
// attributes, 1-D / N-D arrays of uint8/uint16/int32/int64/float/double (chunked, with
// optional shuffle+gzip), 1-D range (hyperslab) reads, writes and appends, and StagedFile
// (write "<path>.tmp", rename into place on commit).
// Every negative HDF5 return becomes a one-line castor::Error naming the file and the
// object, e.g. "x.h5: dataset /text/tokens: H5Dread failed (<innermost HDF5 message>)".
// HDF5's own error-stack printing is switched off (per thread) before every call.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace castor::io {

namespace detail {
// Turns off HDF5's automatic error printing for the calling thread (idempotent, cheap).
void h5_quiet();
// Saves the innermost message of the calling thread's HDF5 error stack (and clears it).
void h5_capture_error();
// Passes an HDF5 result through, capturing the error message at once when it is negative
// (before destructors of temporaries in the same expression make HDF5 calls that clear it).
template <typename T>
T h5_capture(T result) {
  if (result < 0) h5_capture_error();
  return result;
}
// Throws Error("<context>: <function> failed (<captured HDF5 message>)").
[[noreturn]] void h5_fail(const char* expr, const std::string& context);
}  // namespace detail

}  // namespace castor::io

// Evaluates an HDF5 call; a negative result (hid_t, herr_t, htri_t, ssize_t) throws a
// castor::Error whose message is the concatenated context parts plus the failed call.
// Yields the call's value: hid_t id = CASTOR_H5_CHECK(H5Dopen2(...), where, "...");
#define CASTOR_H5_CHECK(expr, ...)                                                               \
  ([&]() {                                                                                       \
    ::castor::io::detail::h5_quiet();                                                            \
    const auto castor_h5_result_ = ::castor::io::detail::h5_capture((expr));                     \
    if (castor_h5_result_ < 0) ::castor::io::detail::h5_fail(#expr, ::castor::cat(__VA_ARGS__)); \
    return castor_h5_result_;                                                                    \
  }())

namespace castor::io {

// Element types of datasets this layer reads and writes.
// f16 (IEEE half) is a storage type only: datasets stored as f16 are read and written
// through float buffers, converted by HDF5.
enum class H5Elem : uint8_t { u8, u16, i32, i64, f16, f32, f64 };

const char* h5_elem_name(H5Elem e);  // "uint8", "uint16", "int32", "int64", "float16", "float32", "float64"

template <typename T>
constexpr H5Elem h5_elem_of() {
  if constexpr (std::is_same_v<T, uint8_t>)
    return H5Elem::u8;
  else if constexpr (std::is_same_v<T, uint16_t>)
    return H5Elem::u16;
  else if constexpr (std::is_same_v<T, int32_t>)
    return H5Elem::i32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return H5Elem::i64;
  else if constexpr (std::is_same_v<T, float>)
    return H5Elem::f32;
  else if constexpr (std::is_same_v<T, double>)
    return H5Elem::f64;
  else
    static_assert(sizeof(T) == 0, "unsupported HDF5 element type");
}

// Owns one HDF5 identifier and closes it with the matching H5?close. Move-only.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Handle() = default;
  H5Handle(hid_t id, Closer close) noexcept : id_(id), close_(close) {}
  H5Handle(H5Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  H5Handle& operator=(H5Handle&& o) noexcept;
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  ~H5Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() noexcept;  // gives up ownership without closing
  void reset() noexcept;     // closes quietly (errors ignored)

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// How a new dataset is laid out. Chunking is used when any of chunk_rows, deflate_level
// or extendible asks for it (and the dataset is not a scalar or empty with fixed size).
struct DatasetOptions {
  int64_t chunk_rows = 0;   // chunk extent along dim 0; 0 = automatic (~1 MiB chunks)
  bool checksum = false;    // Fletcher-32 checksum per chunk (chunked datasets only)
  int deflate_level = 0;    // 0 = uncompressed; 1..9 = shuffle + gzip at that level
  bool extendible = false;  // dim 0 unlimited: grow with Dataset::append / resize
};

class Group;
class Dataset;

// Shared by groups and datasets: identity (file path + object path) and attributes.
class H5Object {
 public:
  hid_t id() const { return handle_.get(); }
  const std::string& file_path() const { return file_; }
  const std::string& path() const { return path_; }  // absolute HDF5 path, "/" for root
  // "<file>: group /a/b" or "<file>: dataset /a/b", the prefix of every error message.
  std::string where() const;
  // "<file>: attribute /name" on the root, else "<where()>: attribute name".
  std::string attr_where(const std::string& name) const;

  bool has_attr(const std::string& name) const;
  std::vector<std::string> attr_names() const;
  // Writers replace an existing attribute of the same name.
  void write_attr_int64(const std::string& name, int64_t value);
  void write_attr_double(const std::string& name, double value);
  void write_attr_string(const std::string& name, const std::string& value);  // UTF-8, vlen
  void write_attr_strings(const std::string& name, const std::vector<std::string>& values);
  // Readers require a present attribute of the matching class (integer, float or integer,
  // string) holding exactly one value (strings: any count); strings may be vlen or fixed.
  int64_t read_attr_int64(const std::string& name) const;
  double read_attr_double(const std::string& name) const;
  std::string read_attr_string(const std::string& name) const;
  std::vector<std::string> read_attr_strings(const std::string& name) const;

 protected:
  H5Object() = default;
  H5Object(H5Handle h, std::string file, std::string path, const char* kind)
      : handle_(std::move(h)), file_(std::move(file)), path_(std::move(path)), kind_(kind) {}

  H5Handle handle_;
  std::string file_;
  std::string path_;
  const char* kind_ = "object";
  // Opened from an untrusted file (File::open_read with require_checksums): string
  // attributes must be fixed-length, since variable-length ones live in HDF5's global
  // heap, which has no checksums (and libhdf5 1.10 can crash on a damaged one).
  bool strict_ = false;

 private:
  hid_t open_attr(const std::string& name, H5T_class_t want, const char* want_name) const;
};

class Dataset : public H5Object {
 public:
  Dataset() = default;

  std::vector<int64_t> shape() const;  // empty for a scalar dataset
  int64_t size() const;                // number of elements
  // Stored element type; throws (naming the dataset) for types outside H5Elem.
  H5Elem elem() const;
  bool is_integer() const;
  bool is_float() const;

  // Reads / writes the whole dataset; n must equal size(). Integer and float data are
  // converted by HDF5 within their class (e.g. uint16 on disk -> int32 in memory);
  // reading across classes throws.
  template <typename T>
  void read(T* out, int64_t n) const {
    read_raw(h5_elem_of<T>(), out, n);
  }
  template <typename T>
  std::vector<T> read_all() const {
    std::vector<T> v(static_cast<size_t>(size()));
    read(v.data(), static_cast<int64_t>(v.size()));
    return v;
  }
  template <typename T>
  void write(const T* data, int64_t n) {
    write_raw(h5_elem_of<T>(), data, n);
  }

  // Rows [begin, begin + count) along dim 0 via a hyperslab (for 1-D datasets a row is
  // one element); bounds-checked; out/data hold count * row_elems() elements.
  template <typename T>
  void read_range(int64_t begin, int64_t count, T* out) const {
    range_raw(h5_elem_of<T>(), begin, count, out, nullptr);
  }
  template <typename T>
  void write_range(int64_t begin, int64_t count, const T* data) {
    range_raw(h5_elem_of<T>(), begin, count, nullptr, data);
  }
  // Extendible only: grows dim 0 by count rows and writes data at the old end.
  template <typename T>
  void append(const T* data, int64_t count) {
    const int64_t old = rows();
    resize(old + count);
    write_range(old, count, data);
  }
  void resize(int64_t n);     // extendible only: dim 0 becomes n rows
  int64_t rows() const;       // extent of dim 0 (0 for a scalar)
  // Storage plausibly holds every element (stored bytes x 1100 >= claimed bytes, the
  // limit of compression; datasets under 64 KiB always pass). A dataset that claims far
  // more elements than were written (sparse, reads as fill values) fails, so a small
  // damaged file cannot make a reader allocate gigabytes.
  bool fully_written() const;
  int64_t row_elems() const;  // product of the other dims (1 for 1-D)

 private:
  friend class Group;
  Dataset(H5Handle h, std::string file, std::string path)
      : H5Object(std::move(h), std::move(file), std::move(path), "dataset") {}
  void check_class(H5Elem mem, const char* verb) const;
  void read_raw(H5Elem e, void* out, int64_t n) const;
  void write_raw(H5Elem e, const void* data, int64_t n);
  void range_raw(H5Elem e, int64_t begin, int64_t count, void* out, const void* in) const;
};

class Group : public H5Object {
 public:
  Group() = default;

  // Paths are relative to this group ("a/b") or absolute ("/a/b").
  bool exists(const std::string& rel) const;  // any link along the path may be missing
  bool is_group(const std::string& rel) const;
  bool is_dataset(const std::string& rel) const;
  std::vector<std::string> children() const;  // link names, in name order

  Group open_group(const std::string& rel) const;      // throws "... group /x not found"
  Group create_group(const std::string& rel);          // creates missing parents
  Group require_group(const std::string& rel);         // open or create
  Dataset open_dataset(const std::string& rel) const;  // throws "... dataset /x not found"
  Dataset create_dataset(const std::string& rel, H5Elem elem, const std::vector<int64_t>& shape,
                         const DatasetOptions& opts = {});  // creates missing parents

  // Creates a dataset of the given shape (empty shape = scalar) and writes data into it.
  template <typename T>
  Dataset write_array(const std::string& rel, const std::vector<int64_t>& shape, const T* data,
                      const DatasetOptions& opts = {}) {
    Dataset d = create_dataset(rel, h5_elem_of<T>(), shape, opts);
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    d.write(data, n);
    return d;
  }
  // 1-D convenience; call with an explicit T: g.write_vector<int32_t>("x", v).
  template <typename T>
  Dataset write_vector(const std::string& rel, std::span<const T> data, const DatasetOptions& opts = {}) {
    return write_array(rel, {static_cast<int64_t>(data.size())}, data.data(), opts);
  }
  template <typename T>
  std::vector<T> read_vector(const std::string& rel) const {
    return open_dataset(rel).read_all<T>();
  }

  std::string abs_path(const std::string& rel) const;  // joins and normalises "a//b/"

 private:
  void create_parents(const std::string& abs);
  friend class File;
  Group(H5Handle h, std::string file, std::string path)
      : H5Object(std::move(h), std::move(file), std::move(path), "group") {}
};

// An open HDF5 file. Objects opened from it keep the file alive (HDF5's weak close):
// close() flushes a writable file, reports errors and drops this handle; the file itself
// closes when its last object does. Writers that rename on completion check
// open_objects() == 0 first.
class File {
 public:
  File() = default;
  // Creates (truncating) a file for writing.
  static File create(const std::string& path);
  // Opens an existing file. Missing, empty, non-HDF5 and truncated files throw an Error
  // naming the path and what is wrong with it.
  // require_checksums: refuse files whose superblock predates metadata checksums
  // (version < 2) before libhdf5 parses them; for untrusted inputs such as shards.
  static File open_read(const std::string& path, bool require_checksums = false);
  static File open_rw(const std::string& path);

  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  ~File() = default;  // closes quietly

  hid_t id() const { return handle_.get(); }
  bool is_open() const { return handle_.valid(); }
  const std::string& path() const { return path_; }
  Group root() const;
  void flush();
  void close();
  int64_t open_objects() const;  // groups, datasets, types, attributes still open

 private:
  bool strict_ = false;
  static File open_existing(const std::string& path, unsigned flags);
  static void check_superblock_version(const std::string& path);
  H5Handle handle_;
  std::string path_;
};

// An HDF5 file written as "<path>.tmp" and renamed to path by commit(), so no half-written
// file is ever visible under path. Destroyed uncommitted (after a failure, or abandoned),
// it drops its handle and removes the temporary file; objects opened from file() should be
// released before that, e.g. by declaring the StagedFile before the members holding them.
class StagedFile {
 public:
  explicit StagedFile(std::string path);  // remembers path; creates nothing yet
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  // Creates (truncating) "<path>.tmp".
  void create();
  File& file() { return file_; }
  const std::string& path() const { return path_; }
  bool committed() const { return committed_; }
  // Checks that no object is still open, closes the file and renames it to path.
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  File file_;
  bool created_ = false;
  bool committed_ = false;
};

// castor file headers: root attributes castor_format = <format> and schema_version =
// "<major>.<minor>". check_castor_header throws (naming the file and the attribute) when
// the format differs or the major version is not supported_major; returns the version.
void write_castor_header(Group& root, const std::string& format, const std::string& version);
std::string check_castor_header(const Group& root, const std::string& format, int supported_major);

}  // namespace castor::io
