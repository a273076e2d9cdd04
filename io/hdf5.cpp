// RAII HDF5 layer: error conversion (innermost HDF5 message appended), file opening with
// clear diagnostics for missing / empty / non-HDF5 / truncated files, datasets with
// optional chunking + shuffle + gzip, hyperslab ranges, scalar and string attributes,
// and StagedFile's write-to-"<path>.tmp"-then-rename.
// Files are written with little-endian standard types; memory uses the native ones.
#include "io/hdf5.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

namespace castor::io {

namespace detail {

void h5_quiet() {
  // The error stack (and its auto-print setting) is per thread in thread-safe builds.
  thread_local bool quiet = false;
  if (!quiet) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    quiet = true;
  }
}

namespace {
herr_t innermost_cb(unsigned /*n*/, const H5E_error2_t* err, void* data) {
  // Walked downward (API call first), so the last description is the innermost one.
  if (err->desc != nullptr && err->desc[0] != '\0') *static_cast<std::string*>(data) = err->desc;
  return 0;
}

thread_local std::string captured_error;
}  // namespace

void h5_capture_error() {
  captured_error.clear();
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost_cb, &captured_error);
  H5Eclear2(H5E_DEFAULT);
}

void h5_fail(const char* expr, const std::string& context) {
  std::string detail = std::move(captured_error);
  captured_error.clear();
  std::string fn(expr);
  fn = fn.substr(0, fn.find('('));
  while (!fn.empty() && fn.back() == ' ') fn.pop_back();
  std::replace(detail.begin(), detail.end(), '\n', ' ');
  std::string msg = context + ": " + fn + " failed";
  if (!detail.empty()) msg += " (" + detail + ")";
  throw Error(msg);
}

}  // namespace detail

namespace {

hid_t mem_type(H5Elem e) {
  switch (e) {
    case H5Elem::u8:
      return H5T_NATIVE_UINT8;
    case H5Elem::u16:
      return H5T_NATIVE_UINT16;
    case H5Elem::i32:
      return H5T_NATIVE_INT32;
    case H5Elem::i64:
      return H5T_NATIVE_INT64;
    case H5Elem::f16:  // no native half: memory buffers of f16 datasets are float
    case H5Elem::f32:
      return H5T_NATIVE_FLOAT;
    case H5Elem::f64:
      return H5T_NATIVE_DOUBLE;
  }
  return H5I_INVALID_HID;
}

// IEEE 754 binary16, little-endian: HDF5 has no predefined half type. Built once and
// never modified or closed (h5py reads it as numpy float16).
hid_t ieee_f16le() {
  static const hid_t type = [] {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    H5Tset_precision(t, 16);
    H5Tlock(t);
    return t;
  }();
  return type;
}

hid_t file_type(H5Elem e) {
  switch (e) {
    case H5Elem::u8:
      return H5T_STD_U8LE;
    case H5Elem::u16:
      return H5T_STD_U16LE;
    case H5Elem::i32:
      return H5T_STD_I32LE;
    case H5Elem::i64:
      return H5T_STD_I64LE;
    case H5Elem::f16:
      return ieee_f16le();
    case H5Elem::f32:
      return H5T_IEEE_F32LE;
    case H5Elem::f64:
      return H5T_IEEE_F64LE;
  }
  return H5I_INVALID_HID;
}

size_t elem_size(H5Elem e) {
  switch (e) {
    case H5Elem::u8:
      return 1;
    case H5Elem::u16:
      return 2;
    case H5Elem::i32:
      return 4;
    case H5Elem::i64:
      return 8;
    case H5Elem::f16:
      return 2;
    case H5Elem::f32:
      return 4;
    case H5Elem::f64:
      return 8;
  }
  return 0;
}

bool is_integer_elem(H5Elem e) { return e == H5Elem::u8 || e == H5Elem::u16 || e == H5Elem::i32 || e == H5Elem::i64; }

const char* class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER:
      return "integer";
    case H5T_FLOAT:
      return "float";
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_VLEN:
      return "vlen";
    case H5T_ARRAY:
      return "array";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_REFERENCE:
      return "reference";
    case H5T_TIME:
      return "time";
    default:
      return "unknown";
  }
}

// "uint16", "float32", ... for the types of H5Elem, else "<class> (N bytes)".
std::string describe_type(hid_t type) {
  const H5T_class_t c = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (c == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    return std::string(is_signed ? "int" : "uint") + std::to_string(size * 8);
  }
  if (c == H5T_FLOAT) return "float" + std::to_string(size * 8);
  return std::string(class_name(c)) + " (" + std::to_string(size) + " bytes)";
}

// Fixed-length UTF-8 strings of `size` bytes (null-terminated, so size >= 1): stored inside
// the (checksummed) object header, unlike variable-length strings.
H5Handle fixed_string_type(size_t size) {
  H5Handle t(CASTOR_H5_CHECK(H5Tcopy(H5T_C_S1), "HDF5 string type"), H5Tclose);
  CASTOR_H5_CHECK(H5Tset_size(t.get(), std::max<size_t>(size, 1)), "HDF5 string type");
  CASTOR_H5_CHECK(H5Tset_strpad(t.get(), H5T_STR_NULLTERM), "HDF5 string type");
  CASTOR_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8), "HDF5 string type");
  return t;
}

H5Handle vlen_string_type() {
  H5Handle t(CASTOR_H5_CHECK(H5Tcopy(H5T_C_S1), "HDF5 string type"), H5Tclose);
  CASTOR_H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE), "HDF5 string type");
  CASTOR_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8), "HDF5 string type");
  return t;
}

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string part = p.substr(i, j - i);
    if (!part.empty() && part != ".") out.push_back(part);
    i = j + 1;
  }
  return out;
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// File access: HDF5's default driver; file locking kept, but not fatal on file systems
// that do not support it (common for Lustre/NFS scratch space on clusters).
H5Handle file_access(const std::string& path) {
  H5Handle fapl(CASTOR_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path, ": file access properties"), H5Pclose);
#if (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7) || H5_VERSION_GE(1, 12, 1)
  CASTOR_H5_CHECK(H5Pset_file_locking(fapl.get(), true, true), path, ": file access properties");
#endif
  return fapl;
}

H5I_type_t object_type(hid_t loc, const std::string& abs) {
  detail::h5_quiet();
  const hid_t obj = H5Oopen(loc, abs.c_str(), H5P_DEFAULT);
  if (obj < 0) {
    H5Eclear2(H5E_DEFAULT);
    return H5I_BADID;
  }
  const H5I_type_t t = H5Iget_type(obj);
  H5Oclose(obj);
  return t;
}

}  // namespace

const char* h5_elem_name(H5Elem e) {
  switch (e) {
    case H5Elem::u8:
      return "uint8";
    case H5Elem::u16:
      return "uint16";
    case H5Elem::i32:
      return "int32";
    case H5Elem::i64:
      return "int64";
    case H5Elem::f16:
      return "float16";
    case H5Elem::f32:
      return "float32";
    case H5Elem::f64:
      return "float64";
  }
  return "?";
}

// ---------------------------------------------------------------------------- H5Handle

H5Handle& H5Handle::operator=(H5Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

hid_t H5Handle::release() noexcept {
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  return id;
}

void H5Handle::reset() noexcept {
  if (id_ >= 0 && close_ != nullptr) {
    detail::h5_quiet();
    if (close_(id_) < 0) H5Eclear2(H5E_DEFAULT);
  }
  id_ = H5I_INVALID_HID;
}

// ---------------------------------------------------------------------------- H5Object

std::string H5Object::where() const { return file_ + ": " + kind_ + " " + path_; }

std::string H5Object::attr_where(const std::string& name) const {
  if (path_ == "/") return file_ + ": attribute /" + name;
  return where() + ": attribute " + name;
}

bool H5Object::has_attr(const std::string& name) const {
  return CASTOR_H5_CHECK(H5Aexists(id(), name.c_str()), attr_where(name)) > 0;
}

namespace {
herr_t attr_name_cb(hid_t /*loc*/, const char* name, const H5A_info_t* /*info*/, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> H5Object::attr_names() const {
  std::vector<std::string> names;
  hsize_t idx = 0;
  CASTOR_H5_CHECK(H5Aiterate2(id(), H5_INDEX_NAME, H5_ITER_INC, &idx, attr_name_cb, &names), where(),
                  ": listing attributes");
  return names;
}

namespace {
// Creates (replacing) a scalar or 1-D attribute and writes buf with mem type mtype.
void write_attr(const H5Object& obj, hid_t loc, const std::string& name, hid_t ftype, hid_t mtype, const void* buf,
                const int64_t* n_elems) {
  const std::string ctx = obj.attr_where(name);
  if (CASTOR_H5_CHECK(H5Aexists(loc, name.c_str()), ctx) > 0) CASTOR_H5_CHECK(H5Adelete(loc, name.c_str()), ctx);
  H5Handle space;
  if (n_elems == nullptr) {
    space = H5Handle(CASTOR_H5_CHECK(H5Screate(H5S_SCALAR), ctx), H5Sclose);
  } else {
    const hsize_t dims[1] = {static_cast<hsize_t>(*n_elems)};
    space = H5Handle(CASTOR_H5_CHECK(H5Screate_simple(1, dims, nullptr), ctx), H5Sclose);
  }
  H5Handle attr(CASTOR_H5_CHECK(H5Acreate2(loc, name.c_str(), ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT), ctx),
                H5Aclose);
  if (n_elems == nullptr || *n_elems > 0) CASTOR_H5_CHECK(H5Awrite(attr.get(), mtype, buf), ctx);
  CASTOR_H5_CHECK(H5Aclose(attr.release()), ctx);
}
}  // namespace

void H5Object::write_attr_int64(const std::string& name, int64_t value) {
  write_attr(*this, id(), name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, nullptr);
}

void H5Object::write_attr_double(const std::string& name, double value) {
  write_attr(*this, id(), name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, nullptr);
}

void H5Object::write_attr_string(const std::string& name, const std::string& value) {
  H5Handle t = fixed_string_type(value.size() + 1);
  write_attr(*this, id(), name, t.get(), t.get(), value.c_str(), nullptr);
}

void H5Object::write_attr_strings(const std::string& name, const std::vector<std::string>& values) {
  size_t width = 1;
  for (const std::string& s : values) width = std::max(width, s.size() + 1);
  H5Handle t = fixed_string_type(width);
  std::vector<char> buf(width * values.size(), '\0');
  for (size_t i = 0; i < values.size(); ++i) std::copy(values[i].begin(), values[i].end(), buf.begin() + ptrdiff_t(i * width));
  const int64_t n = static_cast<int64_t>(values.size());
  write_attr(*this, id(), name, t.get(), t.get(), buf.data(), &n);
}

hid_t H5Object::open_attr(const std::string& name, H5T_class_t want, const char* want_name) const {
  const std::string ctx = attr_where(name);
  CASTOR_CHECK(CASTOR_H5_CHECK(H5Aexists(id(), name.c_str()), ctx) > 0, ctx, ": missing");
  H5Handle attr(CASTOR_H5_CHECK(H5Aopen(id(), name.c_str(), H5P_DEFAULT), ctx), H5Aclose);
  H5Handle type(CASTOR_H5_CHECK(H5Aget_type(attr.get()), ctx), H5Tclose);
  const H5T_class_t c = CASTOR_H5_CHECK(H5Tget_class(type.get()), ctx);
  const bool ok = c == want || (want == H5T_FLOAT && c == H5T_INTEGER);
  CASTOR_CHECK(ok, ctx, ": has type ", describe_type(type.get()), ", expected ", want_name);
  if (want != H5T_STRING) {
    H5Handle space(CASTOR_H5_CHECK(H5Aget_space(attr.get()), ctx), H5Sclose);
    const hssize_t n = CASTOR_H5_CHECK(H5Sget_simple_extent_npoints(space.get()), ctx);
    CASTOR_CHECK(n == 1, ctx, ": expected one value, found ", n);
  }
  return attr.release();
}

int64_t H5Object::read_attr_int64(const std::string& name) const {
  H5Handle attr(open_attr(name, H5T_INTEGER, "an integer"), H5Aclose);
  int64_t v = 0;
  CASTOR_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), attr_where(name));
  return v;
}

double H5Object::read_attr_double(const std::string& name) const {
  H5Handle attr(open_attr(name, H5T_FLOAT, "a number"), H5Aclose);
  double v = 0;
  CASTOR_H5_CHECK(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v), attr_where(name));
  return v;
}

std::string H5Object::read_attr_string(const std::string& name) const {
  std::vector<std::string> v = read_attr_strings(name);
  CASTOR_CHECK(v.size() == 1, attr_where(name), ": expected one string, found ", v.size());
  return v[0];
}

std::vector<std::string> H5Object::read_attr_strings(const std::string& name) const {
  const std::string ctx = attr_where(name);
  H5Handle attr(open_attr(name, H5T_STRING, "a string"), H5Aclose);
  H5Handle ftype(CASTOR_H5_CHECK(H5Aget_type(attr.get()), ctx), H5Tclose);
  H5Handle space(CASTOR_H5_CHECK(H5Aget_space(attr.get()), ctx), H5Sclose);
  const hssize_t n = CASTOR_H5_CHECK(H5Sget_simple_extent_npoints(space.get()), ctx);
  std::vector<std::string> out;
  if (n == 0) return out;
  if (CASTOR_H5_CHECK(H5Tis_variable_str(ftype.get()), ctx) > 0) {
    CASTOR_CHECK(!strict_, ctx, ": a variable-length string (stored outside HDF5's checksummed metadata); "
                 "castor files use fixed-length strings (h5py: numpy.bytes_(\"...\") or a numpy \"S\" array)");
    H5Handle mtype = vlen_string_type();
    std::vector<char*> buf(static_cast<size_t>(n), nullptr);
    CASTOR_H5_CHECK(H5Aread(attr.get(), mtype.get(), buf.data()), ctx);
    for (char* p : buf) out.emplace_back(p != nullptr ? p : "");
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, buf.data());
  } else {
    const size_t size = H5Tget_size(ftype.get());
    CASTOR_CHECK(size > 0, ctx, ": cannot get the string size");
    CASTOR_CHECK(size * static_cast<size_t>(n) <= (size_t{1} << 24), ctx, ": ", n, " strings of ", size,
                 " bytes: more than 16 MiB of attribute");
    H5Handle mtype(CASTOR_H5_CHECK(H5Tcopy(H5T_C_S1), ctx), H5Tclose);
    CASTOR_H5_CHECK(H5Tset_size(mtype.get(), size), ctx);
    CASTOR_H5_CHECK(H5Tset_strpad(mtype.get(), H5T_STR_NULLPAD), ctx);
    CASTOR_H5_CHECK(H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get())), ctx);  // HDF5 converts no charsets
    std::vector<char> buf(size * static_cast<size_t>(n), '\0');
    CASTOR_H5_CHECK(H5Aread(attr.get(), mtype.get(), buf.data()), ctx);
    const bool space_pad = H5Tget_strpad(ftype.get()) == H5T_STR_SPACEPAD;
    for (hssize_t i = 0; i < n; ++i) {
      const char* p = buf.data() + static_cast<size_t>(i) * size;
      std::string s(p, strnlen(p, size));
      if (space_pad)
        while (!s.empty() && s.back() == ' ') s.pop_back();
      out.push_back(s);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------- Dataset

std::vector<int64_t> Dataset::shape() const {
  H5Handle space(CASTOR_H5_CHECK(H5Dget_space(id()), where()), H5Sclose);
  const int rank = CASTOR_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), where());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) CASTOR_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), where());
  return std::vector<int64_t>(dims.begin(), dims.end());
}

int64_t Dataset::size() const {
  H5Handle space(CASTOR_H5_CHECK(H5Dget_space(id()), where()), H5Sclose);
  return CASTOR_H5_CHECK(H5Sget_simple_extent_npoints(space.get()), where());
}

H5Elem Dataset::elem() const {
  H5Handle type(CASTOR_H5_CHECK(H5Dget_type(id()), where()), H5Tclose);
  const H5T_class_t c = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  if (c == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type.get()) == H5T_SGN_2;
    if (!is_signed && size == 1) return H5Elem::u8;
    if (!is_signed && size == 2) return H5Elem::u16;
    if (is_signed && size == 4) return H5Elem::i32;
    if (is_signed && size == 8) return H5Elem::i64;
  } else if (c == H5T_FLOAT) {
    if (size == 2) return H5Elem::f16;
    if (size == 4) return H5Elem::f32;
    if (size == 8) return H5Elem::f64;
  }
  CASTOR_FAIL(where(), ": unsupported element type ", describe_type(type.get()));
}

bool Dataset::is_integer() const {
  H5Handle type(CASTOR_H5_CHECK(H5Dget_type(id()), where()), H5Tclose);
  return H5Tget_class(type.get()) == H5T_INTEGER;
}

bool Dataset::is_float() const {
  H5Handle type(CASTOR_H5_CHECK(H5Dget_type(id()), where()), H5Tclose);
  return H5Tget_class(type.get()) == H5T_FLOAT;
}

void Dataset::check_class(H5Elem mem, const char* verb) const {
  H5Handle type(CASTOR_H5_CHECK(H5Dget_type(id()), where()), H5Tclose);
  const H5T_class_t c = H5Tget_class(type.get());
  const H5T_class_t want = is_integer_elem(mem) ? H5T_INTEGER : H5T_FLOAT;
  CASTOR_CHECK(c == want, where(), ": stored as ", describe_type(type.get()), ", cannot ", verb, " as ",
               h5_elem_name(mem));
}

void Dataset::read_raw(H5Elem e, void* out, int64_t n) const {
  check_class(e, "read");
  const int64_t have = size();
  CASTOR_CHECK(n == have, where(), ": has ", have, " elements, caller expects ", n);
  if (n == 0) return;
  CASTOR_H5_CHECK(H5Dread(id(), mem_type(e), H5S_ALL, H5S_ALL, H5P_DEFAULT, out), where());
}

void Dataset::write_raw(H5Elem e, const void* data, int64_t n) {
  check_class(e, "write");
  const int64_t have = size();
  CASTOR_CHECK(n == have, where(), ": has ", have, " elements, caller wrote ", n);
  if (n == 0) return;
  CASTOR_H5_CHECK(H5Dwrite(id(), mem_type(e), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where());
}

void Dataset::range_raw(H5Elem e, int64_t begin, int64_t count, void* out, const void* in) const {
  check_class(e, out != nullptr ? "read" : "write");
  H5Handle fspace(CASTOR_H5_CHECK(H5Dget_space(id()), where()), H5Sclose);
  const int rank = CASTOR_H5_CHECK(H5Sget_simple_extent_ndims(fspace.get()), where());
  CASTOR_CHECK(rank >= 1, where(), ": range access needs an array, this one is a scalar");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  CASTOR_H5_CHECK(H5Sget_simple_extent_dims(fspace.get(), dims.data(), nullptr), where());
  const int64_t n = static_cast<int64_t>(dims[0]);
  CASTOR_CHECK(begin >= 0 && count >= 0 && begin <= n && count <= n - begin, where(), ": rows [", begin, ", ",
               begin + count, ") outside [0, ", n, ")");
  if (count == 0) return;
  std::vector<hsize_t> start(dims.size(), 0), cnt = dims;
  start[0] = static_cast<hsize_t>(begin);
  cnt[0] = static_cast<hsize_t>(count);
  CASTOR_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr),
                  where());
  H5Handle mspace(CASTOR_H5_CHECK(H5Screate_simple(rank, cnt.data(), nullptr), where()), H5Sclose);
  if (out != nullptr) {
    CASTOR_H5_CHECK(H5Dread(id(), mem_type(e), mspace.get(), fspace.get(), H5P_DEFAULT, out), where(), ": rows [",
                    begin, ", ", begin + count, ")");
  } else {
    CASTOR_H5_CHECK(H5Dwrite(id(), mem_type(e), mspace.get(), fspace.get(), H5P_DEFAULT, in), where(), ": rows [",
                    begin, ", ", begin + count, ")");
  }
}

void Dataset::resize(int64_t n) {
  H5Handle space(CASTOR_H5_CHECK(H5Dget_space(id()), where()), H5Sclose);
  const int rank = CASTOR_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), where());
  CASTOR_CHECK(rank >= 1, where(), ": cannot resize a scalar");
  std::vector<hsize_t> dims(static_cast<size_t>(rank)), maxdims(static_cast<size_t>(rank));
  CASTOR_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), maxdims.data()), where());
  CASTOR_CHECK(maxdims[0] == H5S_UNLIMITED, where(), ": not extendible (created fixed-size)");
  CASTOR_CHECK(n >= 0, where(), ": negative size ", n);
  dims[0] = static_cast<hsize_t>(n);
  CASTOR_H5_CHECK(H5Dset_extent(id(), dims.data()), where(), ": resize to ", n, " rows");
}

bool Dataset::fully_written() const {
  // H5Dget_space_status cannot tell for chunked datasets (a partial last chunk reads as
  // "partly allocated"), so compare the bytes stored with the bytes claimed: no filter
  // compresses better than ~1000:1 (deflate's limit), and small datasets always pass.
  H5Handle type(CASTOR_H5_CHECK(H5Dget_type(id()), where()), H5Tclose);
  const double claimed = double(size()) * double(H5Tget_size(type.get()));
  const double stored = double(H5Dget_storage_size(id()));
  return claimed <= double(1 << 16) || stored * 1100.0 >= claimed;
}

int64_t Dataset::rows() const {
  const std::vector<int64_t> s = shape();
  return s.empty() ? 0 : s[0];
}

int64_t Dataset::row_elems() const {
  const std::vector<int64_t> s = shape();
  int64_t n = 1;
  for (size_t i = 1; i < s.size(); ++i) n *= s[i];
  return n;
}

// ---------------------------------------------------------------------------- Group

std::string Group::abs_path(const std::string& rel) const {
  std::string base = (!rel.empty() && rel[0] == '/') ? "" : path_;
  std::string out;
  for (const std::string& part : split_path(base)) out += "/" + part;
  for (const std::string& part : split_path(rel)) out += "/" + part;
  return out.empty() ? "/" : out;
}

bool Group::exists(const std::string& rel) const {
  const std::vector<std::string> parts = split_path(abs_path(rel));
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    prefix += "/" + parts[i];
    if (CASTOR_H5_CHECK(H5Lexists(id(), prefix.c_str(), H5P_DEFAULT), file_, ": ", prefix) <= 0) return false;
    if (i + 1 < parts.size() && object_type(id(), prefix) != H5I_GROUP) return false;
  }
  return true;
}

bool Group::is_group(const std::string& rel) const {
  return exists(rel) && object_type(id(), abs_path(rel)) == H5I_GROUP;
}

bool Group::is_dataset(const std::string& rel) const {
  return exists(rel) && object_type(id(), abs_path(rel)) == H5I_DATASET;
}

std::vector<std::string> Group::children() const {
  H5G_info_t info;
  CASTOR_H5_CHECK(H5Gget_info(id(), &info), where());
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = CASTOR_H5_CHECK(
        H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT), where(), ": link #", i);
    std::string s(static_cast<size_t>(len) + 1, '\0');
    CASTOR_H5_CHECK(H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size(), H5P_DEFAULT),
                    where(), ": link #", i);
    s.resize(static_cast<size_t>(len));
    names.push_back(s);
  }
  return names;
}

Group Group::open_group(const std::string& rel) const {
  const std::string abs = abs_path(rel);
  CASTOR_CHECK(exists(abs), file_, ": group ", abs, " not found");
  CASTOR_CHECK(object_type(id(), abs) == H5I_GROUP, file_, ": ", abs, " is not a group");
  H5Handle h(CASTOR_H5_CHECK(H5Gopen2(id(), abs.c_str(), H5P_DEFAULT), file_, ": group ", abs), H5Gclose);
  Group g(std::move(h), file_, abs);
  g.strict_ = strict_;
  return g;
}

// Object headers carry no timestamps, so the same content gives byte-identical files.
// Parents are created one by one with the same property, never implicitly by HDF5.
void Group::create_parents(const std::string& abs) {
  const std::vector<std::string> parts = split_path(abs);
  std::string prefix;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix += "/" + parts[i];
    if (CASTOR_H5_CHECK(H5Lexists(id(), prefix.c_str(), H5P_DEFAULT), file_, ": ", prefix) > 0) continue;
    H5Handle gcpl(CASTOR_H5_CHECK(H5Pcreate(H5P_GROUP_CREATE), file_, ": group ", prefix), H5Pclose);
    CASTOR_H5_CHECK(H5Pset_obj_track_times(gcpl.get(), 0), file_, ": group ", prefix);
    H5Handle g(CASTOR_H5_CHECK(H5Gcreate2(id(), prefix.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), file_,
                               ": group ", prefix),
               H5Gclose);
  }
}

Group Group::create_group(const std::string& rel) {
  const std::string abs = abs_path(rel);
  CASTOR_CHECK(!exists(abs), file_, ": ", abs, " already exists");
  create_parents(abs);
  H5Handle gcpl(CASTOR_H5_CHECK(H5Pcreate(H5P_GROUP_CREATE), file_, ": group ", abs), H5Pclose);
  CASTOR_H5_CHECK(H5Pset_obj_track_times(gcpl.get(), 0), file_, ": group ", abs);
  H5Handle h(
      CASTOR_H5_CHECK(H5Gcreate2(id(), abs.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), file_, ": group ", abs),
      H5Gclose);
  return Group(std::move(h), file_, abs);
}

Group Group::require_group(const std::string& rel) { return exists(rel) ? open_group(rel) : create_group(rel); }

Dataset Group::open_dataset(const std::string& rel) const {
  const std::string abs = abs_path(rel);
  CASTOR_CHECK(exists(abs), file_, ": dataset ", abs, " not found");
  CASTOR_CHECK(object_type(id(), abs) == H5I_DATASET, file_, ": ", abs, " is not a dataset");
  H5Handle h(CASTOR_H5_CHECK(H5Dopen2(id(), abs.c_str(), H5P_DEFAULT), file_, ": dataset ", abs), H5Dclose);
  Dataset d(std::move(h), file_, abs);
  d.strict_ = strict_;
  return d;
}

Dataset Group::create_dataset(const std::string& rel, H5Elem elem, const std::vector<int64_t>& shape,
                              const DatasetOptions& opts) {
  const std::string abs = abs_path(rel);
  const std::string ctx = file_ + ": dataset " + abs;
  CASTOR_CHECK(!exists(abs), ctx, ": already exists");
  for (int64_t s : shape) CASTOR_CHECK(s >= 0, ctx, ": negative extent in shape ", shape_string(shape));
  CASTOR_CHECK(opts.deflate_level >= 0 && opts.deflate_level <= 9, ctx, ": deflate level must be 0..9, got ",
               opts.deflate_level);
  CASTOR_CHECK(opts.chunk_rows >= 0, ctx, ": negative chunk_rows ", opts.chunk_rows);
  const size_t rank = shape.size();
  const bool want_chunks = opts.chunk_rows > 0 || opts.deflate_level > 0 || opts.extendible;
  CASTOR_CHECK(!(opts.extendible && rank == 0), ctx, ": a scalar cannot be extendible");
  int64_t row_elems = 1;
  for (size_t i = 1; i < rank; ++i) row_elems *= shape[i];

  H5Handle space;
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  std::vector<hsize_t> maxdims = dims;
  if (rank == 0) {
    space = H5Handle(CASTOR_H5_CHECK(H5Screate(H5S_SCALAR), ctx), H5Sclose);
  } else {
    if (opts.extendible) maxdims[0] = H5S_UNLIMITED;
    space =
        H5Handle(CASTOR_H5_CHECK(H5Screate_simple(static_cast<int>(rank), dims.data(), maxdims.data()), ctx), H5Sclose);
  }

  H5Handle dcpl(CASTOR_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), ctx), H5Pclose);
  const bool chunked = want_chunks && rank > 0 && row_elems > 0 && (opts.extendible || shape[0] > 0);
  CASTOR_CHECK(!(opts.extendible && !chunked), ctx, ": cannot be extendible with shape ", shape_string(shape));
  if (chunked) {
    const int64_t esize = static_cast<int64_t>(elem_size(elem));
    int64_t rows = opts.chunk_rows > 0 ? opts.chunk_rows : std::max<int64_t>(1, (int64_t{1} << 20) / esize / row_elems);
    if (!opts.extendible) rows = std::min(rows, shape[0]);
    CASTOR_CHECK(rows * row_elems * esize < (int64_t{1} << 32), ctx, ": chunk of ", rows,
                 " rows exceeds HDF5's 4 GiB chunk limit");
    std::vector<hsize_t> chunk = dims;
    chunk[0] = static_cast<hsize_t>(rows);
    CASTOR_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(rank), chunk.data()), ctx);
    if (opts.checksum) CASTOR_H5_CHECK(H5Pset_fletcher32(dcpl.get()), ctx);
    if (opts.deflate_level > 0) {
      CASTOR_CHECK(H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0, ctx, ": this HDF5 library has no gzip (deflate) filter");
      CASTOR_H5_CHECK(H5Pset_shuffle(dcpl.get()), ctx);
      CASTOR_H5_CHECK(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(opts.deflate_level)), ctx);
    }
  }
  CASTOR_H5_CHECK(H5Pset_obj_track_times(dcpl.get(), 0), ctx);
  create_parents(abs);
  H5Handle h(CASTOR_H5_CHECK(
                 H5Dcreate2(id(), abs.c_str(), file_type(elem), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), ctx),
             H5Dclose);
  return Dataset(std::move(h), file_, abs);
}

// ---------------------------------------------------------------------------- File

File File::create(const std::string& path) {
  File f;
  f.path_ = path;
  const H5Handle fapl = file_access(path);
  // The HDF5 1.10 file format: superblock v3, object headers, heaps, B-trees and chunk
  // indexes all carry checksums, so damaged metadata is an error, not undefined behaviour.
  CASTOR_H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110), path,
                  ": file access properties");
  // The root group, like every object castor creates, carries no timestamps.
  H5Handle fcpl(CASTOR_H5_CHECK(H5Pcreate(H5P_FILE_CREATE), path, ": file creation properties"), H5Pclose);
  CASTOR_H5_CHECK(H5Pset_obj_track_times(fcpl.get(), 0), path, ": file creation properties");
  f.handle_ = H5Handle(CASTOR_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), path,
                                       ": cannot create HDF5 file"),
                       H5Fclose);
  return f;
}

File File::open_read(const std::string& path, bool require_checksums) {
  if (require_checksums) check_superblock_version(path);
  File f = open_existing(path, H5F_ACC_RDONLY);
  f.strict_ = require_checksums;
  return f;
}

// The superblock signature sits at offset 0, 512, 1024, ... (after an optional user
// block); the byte after it is the superblock version. Versions 0 and 1 (HDF5's default
// "earliest" format) have no metadata checksums, and libhdf5 1.10 can crash on damaged
// metadata of that kind, so untrusted files are refused before libhdf5 parses them.
void File::check_superblock_version(const std::string& path) {
  static const char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  std::ifstream in(path, std::ios::binary);
  if (!in) return;  // open_existing reports missing and unreadable files
  char buf[9];
  for (std::streamoff at = 0;; at = at == 0 ? 512 : at * 2) {
    in.seekg(at);
    if (!in.read(buf, 9)) return;  // no signature: open_existing says so
    if (std::memcmp(buf, kSignature, 8) == 0) {
      const int version = static_cast<unsigned char>(buf[8]);
      CASTOR_CHECK(version >= 2, path, ": HDF5 superblock version ", version,
                   " (the legacy format without metadata checksums); castor reads files in the HDF5 1.10 format "
                   "(h5py: h5py.File(path, \"w\", libver=\"v110\"); or h5repack -L)");
      return;
    }
  }
}

File File::open_rw(const std::string& path) { return open_existing(path, H5F_ACC_RDWR); }

File File::open_existing(const std::string& path, unsigned flags) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  CASTOR_CHECK(fs::exists(st), path, ": no such file");
  CASTOR_CHECK(!fs::is_directory(st), path, ": is a directory, not an HDF5 file");
  const uintmax_t bytes = fs::file_size(path, ec);
  CASTOR_CHECK(!ec, path, ": cannot read file size: ", ec.message());
  CASTOR_CHECK(bytes > 0, path, ": empty file, not an HDF5 file");
  const htri_t is_h5 = CASTOR_H5_CHECK(H5Fis_hdf5(path.c_str()), path, ": cannot open");
  CASTOR_CHECK(is_h5 > 0, path, ": not an HDF5 file (no HDF5 signature)");
  File f;
  f.path_ = path;
  const H5Handle fapl = file_access(path);
  f.handle_ = H5Handle(CASTOR_H5_CHECK(H5Fopen(path.c_str(), flags, fapl.get()), path,
                                       ": cannot open HDF5 file (damaged or truncated?)"),
                       H5Fclose);
  return f;
}

Group File::root() const {
  CASTOR_CHECK(is_open(), path_, ": file is closed");
  H5Handle h(CASTOR_H5_CHECK(H5Gopen2(id(), "/", H5P_DEFAULT), path_, ": group /"), H5Gclose);
  Group g(std::move(h), path_, "/");
  g.strict_ = strict_;
  return g;
}

void File::flush() {
  CASTOR_CHECK(is_open(), path_, ": file is closed");
  CASTOR_H5_CHECK(H5Fflush(id(), H5F_SCOPE_LOCAL), path_, ": flush");
}

int64_t File::open_objects() const {
  if (!is_open()) return 0;
  const ssize_t n = CASTOR_H5_CHECK(
      H5Fget_obj_count(id(), H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR | H5F_OBJ_LOCAL), path_,
      ": counting open objects");
  return static_cast<int64_t>(n);
}

void File::close() {
  if (!is_open()) return;
  unsigned intent = 0;
  CASTOR_H5_CHECK(H5Fget_intent(id(), &intent), path_, ": close");
  if (intent & H5F_ACC_RDWR) CASTOR_H5_CHECK(H5Fflush(id(), H5F_SCOPE_LOCAL), path_, ": flush");
  CASTOR_H5_CHECK(H5Fclose(handle_.release()), path_, ": close");
}

// ---------------------------------------------------------------------------- StagedFile

StagedFile::StagedFile(std::string path) : path_(std::move(path)), tmp_path_(path_ + ".tmp") {}

StagedFile::~StagedFile() {
  if (!created_ || committed_) return;
  file_ = File();
  std::error_code ec;
  std::filesystem::remove(tmp_path_, ec);
}

void StagedFile::create() {
  file_ = File::create(tmp_path_);
  created_ = true;
}

void StagedFile::commit() {
  CASTOR_CHECK(file_.open_objects() == 0, path_, ": internal error: ", file_.open_objects(),
               " HDF5 objects still open at close");
  file_.close();
  std::error_code ec;
  std::filesystem::rename(tmp_path_, path_, ec);
  CASTOR_CHECK(!ec, path_, ": cannot rename ", tmp_path_, " into place: ", ec.message());
  committed_ = true;
}

// ---------------------------------------------------------------------------- headers

void write_castor_header(Group& root, const std::string& format, const std::string& version) {
  root.write_attr_string("castor_format", format);
  root.write_attr_string("schema_version", version);
}

std::string check_castor_header(const Group& root, const std::string& format, int supported_major) {
  CASTOR_CHECK(root.has_attr("castor_format"), root.attr_where("castor_format"), ": missing (not a castor ", format,
               " file)");
  const std::string found = root.read_attr_string("castor_format");
  CASTOR_CHECK(found == format, root.attr_where("castor_format"), ": expected \"", format, "\", found \"", found, "\"");
  CASTOR_CHECK(root.has_attr("schema_version"), root.attr_where("schema_version"), ": missing");
  const std::string version = root.read_attr_string("schema_version");
  const size_t dot = version.find('.');
  const auto all_digits = [](const std::string& s) {
    return !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  CASTOR_CHECK(dot != std::string::npos && all_digits(version.substr(0, dot)) && all_digits(version.substr(dot + 1)),
               root.attr_where("schema_version"), ": malformed \"", version, "\" (expected major.minor)");
  const int major = std::stoi(version.substr(0, dot));
  CASTOR_CHECK(major == supported_major, root.attr_where("schema_version"), ": unsupported version \"", version,
               "\" (this build reads ", format, " ", supported_major, ".x)");
  return version;
}

}  // namespace castor::io
