// image_tool: test-only driver of io/image.h for tests/python/test_image_resize.py.
//   image_tool fit IN.raw H W C SIZE OUT_C OUT.raw
// reads H*W*C raw uint8 pixels (row-major, interleaved channels), writes the
// SIZE*SIZE*OUT_C pixels of fit_image(in, SIZE, OUT_C). Exit 1 with a message on errors.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "io/image.h"

int main(int argc, char** argv) {
  if (argc != 9 || std::string(argv[1]) != "fit") {
    std::fprintf(stderr, "usage: image_tool fit IN.raw H W C SIZE OUT_C OUT.raw\n");
    return 2;
  }
  try {
    castor::io::Image in{std::stoll(argv[3]), std::stoll(argv[4]), std::stoll(argv[5]), {}};
    std::ifstream f(argv[2], std::ios::binary);
    in.pixels.assign(std::istreambuf_iterator<char>(f), {});
    const castor::io::Image out = castor::io::fit_image(in, std::stoll(argv[6]), std::stoll(argv[7]));
    std::ofstream o(argv[8], std::ios::binary);
    o.write(reinterpret_cast<const char*>(out.pixels.data()), static_cast<std::streamsize>(out.pixels.size()));
    if (!o) {
      std::fprintf(stderr, "image_tool: cannot write %s\n", argv[8]);
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "image_tool: %s\n", e.what());
    return 1;
  }
  return 0;
}
