// Element types. f32 is the compute type on CPU; bf16 and f16 are defined for storage
// (checkpoints, exports, later GPU compute); i32 holds token ids.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace castor {

enum class DType : uint8_t { f32, bf16, f16, i32 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
  }
  return "?";
}

// bf16 storage conversion (round to nearest even), used by checkpoint export.
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);

}  // namespace castor
