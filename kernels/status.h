// Status codes returned by every kernel. Kernels never throw and never allocate;
// the caller (core) turns a non-ok status into a castor::Error with context.
#pragma once

namespace castor::kernels {

enum class Status {
  kOk = 0,
  kInvalidArgument,   // a size, pointer or stride the kernel cannot use
  kOutOfRange,        // an index (e.g. a token id) outside its table
  kNotSupported,      // a combination this kernel does not implement
  kDeviceError,       // a CUDA launch or runtime call failed (GPU kernels)
};

inline const char* status_string(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kOutOfRange: return "index out of range";
    case Status::kNotSupported: return "not supported";
    case Status::kDeviceError: return "CUDA device error";
  }
  return "unknown status";
}

}  // namespace castor::kernels
