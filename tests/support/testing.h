// Helpers shared by the GoogleTest suites: error_of (the message of the castor::Error a
// callable throws), EXPECT_CONTAINS, TempDir (a fresh folder removed on destruction),
// the TempDirTest fixture built on it, and truncated_copy for damaged-file tests.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/error.h"

namespace castor::testing {

// Runs f and returns the message of the castor::Error it throws; any other exception, or
// none, is a test failure and yields "".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected castor::Error, got std::exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected castor::Error, nothing thrown";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)

// A fresh, uniquely named folder under the system temp dir, removed with everything in it
// (errors ignored) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "castor_test") {
    namespace fs = std::filesystem;
    std::random_device rd;
    do {
      path_ = fs::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    } while (!fs::create_directory(path_));  // false: the name was taken, draw another
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  // The path of rel inside the folder (nothing is created).
  std::string file(const std::string& rel) const { return (path_ / rel).string(); }
  // Writes text to rel inside the folder (its parent folders must exist).
  void write(const std::string& rel, const std::string& text) const {
    std::ofstream(path_ / rel, std::ios::binary) << text;
  }

 private:
  std::filesystem::path path_;
};

// Fixture giving each test its own TempDir, dir_, and file(name) = a path inside it.
class TempDirTest : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }

  // A reader (open(path) constructs it) must reject a missing file, an empty file and a
  // text file, each with an error that starts with the path.
  template <typename Open>
  void expect_rejects_non_hdf5(Open open) {
    const std::string missing = file("missing.h5");
    EXPECT_EQ(error_of([&] { open(missing); }), missing + ": no such file");
    const std::string empty = file("empty.h5");
    std::ofstream(empty).close();
    EXPECT_CONTAINS(error_of([&] { open(empty); }), empty + ": empty file");
    const std::string text = file("text.h5");
    std::ofstream(text) << "And God said, Let there be light: and there was light.\n";
    EXPECT_CONTAINS(error_of([&] { open(text); }), text + ": not an HDF5 file");
  }

  TempDir dir_;
};

// Copies the file at from to to, cut at half its size (a damaged / truncated file).
inline void truncated_copy(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to);
  std::filesystem::resize_file(to, std::filesystem::file_size(from) / 2);
}

}  // namespace castor::testing
