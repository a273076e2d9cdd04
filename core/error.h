// castor::Error and the check macros. core/parallel/io throw Error with context; launch/
// catches it, prints "castor: error: rank R: <message>" and aborts the job.
// CASTOR_CHECK(cond, parts...) concatenates the streamable parts into the message.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/status.h"

namespace castor {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values into one string.
template <typename... Parts>
std::string cat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

}  // namespace castor

#define CASTOR_CHECK(cond, ...)                                 \
  do {                                                          \
    if (!(cond)) throw ::castor::Error(::castor::cat(__VA_ARGS__)); \
  } while (0)

#define CASTOR_FAIL(...) throw ::castor::Error(::castor::cat(__VA_ARGS__))

// Turns a kernel status into an Error naming the call site.
#define CASTOR_KERNEL_CHECK(expr)                                                        \
  do {                                                                                   \
    ::castor::kernels::Status castor_status_ = (expr);                                   \
    if (castor_status_ != ::castor::kernels::Status::kOk)                                \
      throw ::castor::Error(::castor::cat("kernel ", #expr, " failed: ",                 \
                                          ::castor::kernels::status_string(castor_status_), \
                                          " (", __FILE__, ":", __LINE__, ")"));          \
  } while (0)
