// castor_bench_comm: all-reduce (sum, f32, in place) through castor's blocking
// MpiComm::all_reduce, against MPI_Allreduce, MPI_Iallreduce + MPI_Wait and std::memcpy
// (rank 0, bytes / time: each byte read and written once, counted once), for sizes from
// --min-bytes to --max-bytes. Run under `mpirun -np N`; rank 0 prints median times, algbw
// (bytes / time) and busbw (algbw x 2(N-1)/N, NCCL-tests). Last line "RESULT key=value ...".
// Not a test: no assertions on timings.
#include <mpi.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/mpi_comm.h"

namespace po = boost::program_options;

namespace {

using Clock = std::chrono::steady_clock;

struct CommOptions {
  size_t min_bytes = 4096;
  size_t max_bytes = size_t(256) << 20;
  int factor = 4;
  int reps = 10;                            // timed samples per size (fewer at large sizes)
  int min_reps = 3;                         // ... but never fewer than this
  size_t bytes_per_size = size_t(1) << 30;  // samples x bytes at most this, above min_reps
  size_t sample_bytes = size_t(4) << 20;    // small sizes: back-to-back calls per sample up to this
  bool peer = true;                         // also time MPI_Allreduce and MPI_Iallreduce + MPI_Wait
};

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string human_bytes(size_t b) {
  char s[32];
  if (b >= (size_t(1) << 20))
    std::snprintf(s, sizeof(s), "%zu MiB", b >> 20);
  else if (b >= 1024)
    std::snprintf(s, sizeof(s), "%zu KiB", b >> 10);
  else
    std::snprintf(s, sizeof(s), "%zu B", b);
  return s;
}

// Returns false when --help was printed.
bool parse_options(int argc, char** argv, CommOptions& o, bool lead) {
  po::options_description desc(
      "castor_bench_comm: all-reduce (sum, f32) through castor's MpiComm vs MPI_Allreduce vs memcpy; "
      "run under mpirun -np N");
  auto add = desc.add_options();
  add("help,h", "print this help and exit");
  add("min-bytes", po::value(&o.min_bytes)->default_value(o.min_bytes), "smallest message (multiple of 4)");
  add("max-bytes", po::value(&o.max_bytes)->default_value(o.max_bytes), "largest message (default 256 MiB)");
  add("factor", po::value(&o.factor)->default_value(o.factor), "size step: 2 or 4 (powers of it)");
  add("reps", po::value(&o.reps)->default_value(o.reps), "timed samples per size (median), after one warm-up sample");
  add("min-reps", po::value(&o.min_reps)->default_value(o.min_reps), "fewest timed samples at the large sizes");
  add("bytes-per-size", po::value(&o.bytes_per_size)->default_value(o.bytes_per_size),
      "large sizes: samples are cut to this many bytes in all (but at least --min-reps)");
  add("sample-bytes", po::value(&o.sample_bytes)->default_value(o.sample_bytes),
      "small sizes: one sample is back-to-back calls moving this many bytes, timed together");
  add("no-peer", "skip the plain MPI columns (MPI_Allreduce, MPI_Iallreduce + MPI_Wait)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    if (lead) std::cout << desc << "\n";
    return false;
  }
  po::notify(vm);
  o.peer = !vm.count("no-peer");
  CASTOR_CHECK(o.min_bytes >= 4 && o.min_bytes % 4 == 0, "--min-bytes must be a positive multiple of 4");
  CASTOR_CHECK(o.max_bytes >= o.min_bytes, "--max-bytes must be >= --min-bytes");
  CASTOR_CHECK(o.max_bytes / 4 <= size_t(INT32_MAX), "--max-bytes exceeds MPI's int count of floats");
  CASTOR_CHECK(o.factor == 2 || o.factor == 4, "--factor must be 2 or 4 (got ", o.factor, ")");
  CASTOR_CHECK(o.reps > 0 && o.min_reps > 0, "--reps and --min-reps must be positive");
  CASTOR_CHECK(o.sample_bytes > 0 && o.bytes_per_size > 0, "--sample-bytes and --bytes-per-size must be positive");
  return true;
}

// Median over `reps` samples of the seconds per call of fn, each sample `calls` calls in
// a row after a barrier, the slowest rank's time per sample (all ranks return it); one
// untimed sample first.
template <typename Fn>
double time_collective(castor::parallel::MpiComm& comm, int reps, int calls, Fn&& fn) {
  std::vector<double> t(static_cast<size_t>(reps));
  for (int s = -1; s < reps; ++s) {
    comm.barrier();
    const auto t0 = Clock::now();
    for (int c = 0; c < calls; ++c) fn();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count() / calls;
    if (s >= 0) t[size_t(s)] = dt;
  }
  comm.all_reduce(t.data(), t.size(), castor::ReduceOp::kMax);
  return median(t);
}

// Median seconds per std::memcpy of `bytes` (this rank only), same sampling.
double time_memcpy(char* dst, const char* src, size_t bytes, int reps, int calls) {
  std::vector<double> t;
  for (int s = -1; s < reps; ++s) {
    const auto t0 = Clock::now();
    for (int c = 0; c < calls; ++c) {
      std::memcpy(dst, src, bytes);
      asm volatile("" : : "r"(dst) : "memory");  // keep every copy
    }
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count() / calls;
    if (s >= 0) t.push_back(dt);
  }
  return median(t);
}

int run(const CommOptions& o, castor::parallel::MpiComm& world) {
  const int n = world.size();
  const bool lead = world.rank() == 0;
  const size_t max_floats = o.max_bytes / 4;
  std::vector<float> data(max_floats);

  // Correctness once, at the largest size: every rank contributes rank + 1.
  std::fill(data.begin(), data.end(), float(world.rank() + 1));
  world.all_reduce(data.data(), max_floats, castor::ReduceOp::kSum);
  const float expect = float(n) * float(n + 1) / 2.0f;
  CASTOR_CHECK(data.front() == expect && data.back() == expect, "all_reduce check failed: got ", data.front(),
               ", expected ", expect);
  // Zeros from here on: sums stay zero (no growth to inf), which costs the same.
  std::fill(data.begin(), data.end(), 0.0f);

  std::vector<char> src, dst;
  if (lead) {
    src.assign(o.max_bytes, 1);  // touched: no page faults in the timed copies
    dst.assign(o.max_bytes, 0);
  }

  char host[MPI_MAX_PROCESSOR_NAME];
  int host_len = 0;
  MPI_Get_processor_name(host, &host_len);
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int version_len = 0;
  MPI_Get_library_version(version, &version_len);
  std::string mpi_version(version, size_t(version_len));
  mpi_version = mpi_version.substr(0, mpi_version.find_first_of(",\n"));
  if (lead) {
    std::printf("castor_bench_comm: %d ranks (rank 0 on %s), %s\n", n, host, mpi_version.c_str());
    std::printf(
        "all-reduce: sum, f32, in place. castor = MpiComm::all_reduce (MPI_Iallreduce + MPI_Test, spinning\n"
        "200 us, then polling with a growing sleep); MPI = MPI_Allreduce (coll/tuned); MPI_Iallreduce+Wait = what castor\n"
        "posts (coll/libnbc), waited for with MPI_Wait. time = median over samples of the slowest rank's\n"
        "time per call; small sizes: one sample is back-to-back calls of up to %s in all.\n",
        human_bytes(o.sample_bytes).c_str());
    std::printf(
        "algbw = bytes / time; busbw = algbw x 2(n-1)/n (NCCL-tests; n = %d: x %.3f).\n"
        "memcpy: rank 0 alone, std::memcpy of the same bytes between two buffers, median; its bandwidth is\n"
        "bytes / time like algbw (each byte read once and written once, counted once, not twice).\n"
        "GB = 1e9 bytes.\n\n",
        n, 2.0 * (n - 1) / n);
    std::printf(
        "| bytes | size | samples x calls | castor us | algbw GB/s | busbw GB/s |%s memcpy us | memcpy GB/s |\n",
        o.peer ? " MPI_Allreduce us | MPI busbw GB/s | MPI_Iallreduce+Wait us |" : "");
    std::printf("|---:|---:|---:|---:|---:|---:|%s---:|---:|\n", o.peer ? "---:|---:|---:|" : "");
    std::fflush(stdout);
  }

  const double bus_factor = 2.0 * (n - 1) / n;
  double busbw_max = 0.0, busbw_at_max = 0.0, us_at_min = 0.0;
  for (size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= size_t(o.factor)) {
    const size_t count = bytes / 4;
    const int calls = int(std::max<size_t>(1, o.sample_bytes / bytes));
    const int reps = int(std::clamp<size_t>(o.bytes_per_size / bytes, size_t(o.min_reps), size_t(o.reps)));
    const double t_castor =
        time_collective(world, reps, calls, [&] { world.all_reduce(data.data(), count, castor::ReduceOp::kSum); });
    double t_mpi = std::nan(""), t_nb = std::nan("");
    if (o.peer) {
      t_mpi = time_collective(world, reps, calls, [&] {
        const int rc = MPI_Allreduce(MPI_IN_PLACE, data.data(), int(count), MPI_FLOAT, MPI_SUM, world.mpi());
        CASTOR_CHECK(rc == MPI_SUCCESS, "MPI_Allreduce failed");
      });
      // What castor's all_reduce posts, waited for without its sleeping poll loop.
      t_nb = time_collective(world, reps, calls, [&] {
        MPI_Request req = MPI_REQUEST_NULL;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, data.data(), int(count), MPI_FLOAT, MPI_SUM, world.mpi(), &req);
        if (rc == MPI_SUCCESS) rc = MPI_Wait(&req, MPI_STATUS_IGNORE);
        CASTOR_CHECK(rc == MPI_SUCCESS, "MPI_Iallreduce/MPI_Wait failed");
      });
    }
    double t_copy = std::nan("");
    if (lead) t_copy = time_memcpy(dst.data(), src.data(), bytes, reps, calls);
    world.barrier();  // the other ranks wait here while rank 0 copies

    const double algbw = double(bytes) / t_castor / 1e9;
    busbw_max = std::max(busbw_max, algbw * bus_factor);
    busbw_at_max = algbw * bus_factor;
    if (bytes == o.min_bytes) us_at_min = t_castor * 1e6;
    if (lead) {
      std::printf("| %zu | %s | %d x %d | %.1f | %.3f | %.3f |", bytes, human_bytes(bytes).c_str(), reps, calls,
                  t_castor * 1e6, algbw, algbw * bus_factor);
      if (o.peer) {
        std::printf(" %.1f | %.3f | %.1f |", t_mpi * 1e6, double(bytes) / t_mpi / 1e9 * bus_factor, t_nb * 1e6);
      }
      std::printf(" %.1f | %.2f |\n", t_copy * 1e6, double(bytes) / t_copy / 1e9);
      std::fflush(stdout);
    }
    if (bytes > o.max_bytes / size_t(o.factor)) break;  // no overflow past the top
  }
  if (lead) {
    std::printf(
        "\nRESULT impl=castor_comm ranks=%d min_bytes=%zu us_at_min=%.2f max_bytes=%zu busbw_at_max_gbs=%.3f "
        "busbw_best_gbs=%.3f\n",
        n, o.min_bytes, us_at_min, o.max_bytes, busbw_at_max, busbw_max);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  castor::parallel::MpiSession session(&argc, &argv);
  const bool lead = session.world_rank() == 0;
  try {
    CommOptions o;
    if (!parse_options(argc, argv, o, lead)) return 0;
    castor::parallel::MpiComm world(MPI_COMM_WORLD, "world");
    return run(o, world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "castor_bench_comm: rank %d: error: %s\n", session.world_rank(), e.what());
    castor::parallel::MpiSession::abort_job(1);
  }
}
