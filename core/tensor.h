// Tensor: a non-owning, typed view {data, dtype, shape, device}. Memory is owned by a
// Buffer (core/buffer.h) or an arena; tensors are cheap values passed everywhere.
// Shapes are row-major, at most 4 dimensions.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace castor {

enum class Device : uint8_t { kCpu, kCuda };

class Shape {
 public:
  static constexpr int kMaxDims = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    CASTOR_CHECK(dims.size() <= kMaxDims, "shape with ", dims.size(), " dims (max ", kMaxDims, ")");
    for (int64_t d : dims) {
      CASTOR_CHECK(d >= 0, "negative dimension ", d);
      dims_[rank_++] = d;
    }
  }
  static Shape of(const std::vector<int64_t>& dims) {
    CASTOR_CHECK(dims.size() <= kMaxDims, "shape with ", dims.size(), " dims (max ", kMaxDims, ")");
    Shape s;
    for (int64_t d : dims) {
      CASTOR_CHECK(d >= 0, "negative dimension ", d);
      s.dims_[s.rank_++] = d;
    }
    return s;
  }
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[i] != o.dims_[i]) return false;
    return true;
  }
  std::vector<int64_t> dims() const { return {dims_.begin(), dims_.begin() + rank_}; }
  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + ")";
  }

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  Shape shape;
  Device device = Device::kCpu;

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  float* f32() const {
    CASTOR_CHECK(dtype == DType::f32, "tensor is ", dtype_name(dtype), ", expected f32");
    return static_cast<float*>(data);
  }
  int32_t* i32() const {
    CASTOR_CHECK(dtype == DType::i32, "tensor is ", dtype_name(dtype), ", expected i32");
    return static_cast<int32_t*>(data);
  }
};

inline Tensor f32_tensor(float* data, Shape shape) { return {data, DType::f32, shape, Device::kCpu}; }

// An operand in backend memory: pointer and element type. at(n) is n elements further.
struct Ref {
  void* p = nullptr;
  DType t = DType::f32;
  Ref at(int64_t elems) const {
    return {p ? static_cast<char*>(p) + elems * int64_t(dtype_size(t)) : nullptr, t};
  }
  float* f32() const {
    CASTOR_CHECK(t == DType::f32, "operand is ", dtype_name(t), ", expected f32");
    return static_cast<float*>(p);
  }
};
inline Ref ref(const Tensor& x) { return {x.data, x.dtype}; }
inline Ref ref(float* p) { return {p, DType::f32}; }
inline Ref ref(const float* p) { return {const_cast<float*>(p), DType::f32}; }


}  // namespace castor
