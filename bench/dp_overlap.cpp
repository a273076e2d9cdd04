// castor_bench_dp_overlap: dense-s training steps (as bench/dense_s_step.cpp) under
// `mpirun -np N`, three modes interleaved step by step: compute only, gradient buckets
// all-reduced after backward (serial), and started during backward (overlapped, as
// launch/train.cpp). Prints phase medians, communication time, the share the overlap
// hides, tokens/s and a last "RESULT key=value ..." line; with one rank, compute only
// (the one-process baseline for dp). Not a test: no assertions on timings.
#include <mpi.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/config.h"
#include "core/error.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/param.h"
#include "kernels/cpu/gemm.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_comm.h"

namespace po = boost::program_options;

namespace {

using Clock = std::chrono::steady_clock;

enum class Mode { kCompute, kSerial, kOverlap };
constexpr const char* kModeName[] = {"compute", "serial", "overlap"};

struct DpOptions {
  int64_t steps = 8;   // timed steps per mode
  int64_t warmup = 2;  // untimed steps per mode first
  int threads = 1;
  double bucket_mb = 25.0;  // as `castor train --parallel.bucket_mb`
  std::string modes;        // empty: compute,serial,overlap (compute with one rank)
  std::vector<Mode> mode_list;
  uint64_t seed = 1337;
};

// The dense-s benchmark shape (bench/dense_s_step.cpp).
constexpr int64_t kBatch = 4, kSeq = 256;

castor::ModelConfig dense_s_config() {
  castor::ModelConfig mc;
  mc.family = castor::parse_family("gpt2");
  mc.vocab_size = 50257;
  mc.d_model = 384;
  mc.n_layers = 6;
  mc.n_heads = 6;
  mc.max_seq_len = 1024;
  return mc;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string fixed1(double v) {
  char s[32];
  std::snprintf(s, sizeof(s), "%.1f", v);
  return s;
}

double ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

std::vector<Mode> parse_modes(const std::string& s) {
  std::vector<Mode> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    bool known = false;
    for (int m = 0; m < 3; ++m) {
      if (item == kModeName[m]) {
        out.push_back(Mode(m));
        known = true;
      }
    }
    CASTOR_CHECK(known, "--modes: unknown mode '", item, "' (compute, serial, overlap)");
  }
  CASTOR_CHECK(!out.empty(), "--modes: no mode given");
  return out;
}

// Returns false when --help was printed.
bool parse_options(int argc, char** argv, DpOptions& o, int ranks, bool lead) {
  po::options_description desc(
      "castor_bench_dp_overlap: dense-s training steps with data parallelism (mpirun -np N), communication "
      "serial vs overlapped with backward");
  auto add = desc.add_options();
  add("help,h", "print this help and exit");
  add("steps", po::value(&o.steps)->default_value(o.steps), "timed steps per mode");
  add("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed steps per mode before the timed ones");
  add("threads", po::value(&o.threads)->default_value(o.threads), "OpenMP/OpenBLAS threads per rank");
  add("bucket-mb", po::value(&o.bucket_mb)->default_value(o.bucket_mb),
      "gradient bucket size in MB (1e6 bytes), as castor train --parallel.bucket_mb");
  add("modes", po::value(&o.modes),
      "comma-separated subset of compute,serial,overlap (default: all three; compute with one rank)");
  add("seed", po::value(&o.seed)->default_value(o.seed), "parameter init and token seed (tokens: + rank)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    if (lead) std::cout << desc << "\n";
    return false;
  }
  po::notify(vm);
  CASTOR_CHECK(o.steps > 0, "--steps must be positive (got ", o.steps, ")");
  CASTOR_CHECK(o.warmup >= 0, "--warmup must be >= 0 (got ", o.warmup, ")");
  CASTOR_CHECK(o.threads > 0, "--threads must be positive (got ", o.threads, ")");
  CASTOR_CHECK(o.bucket_mb > 0, "--bucket-mb must be positive (got ", o.bucket_mb, ")");
  if (o.modes.empty()) o.modes = ranks > 1 ? "compute,serial,overlap" : "compute";
  o.mode_list = parse_modes(o.modes);
  return true;
}

// Phase times (ms) recorded per timed step: times[mode][field][step].
// kBwd: backward up to its last grads_ready call (ready_from(0), at the very end), with
// the earlier ready_from calls (kReady) in it; kTail: from there to the end of finish(),
// i.e. the communication left after backward's compute (for serial: finish() alone).
enum Field { kZero, kFwd, kBwd, kReady, kTail, kOpt, kStep, kFields };

// Elementwise over ranks: the mean, max and min of every recorded time.
struct OverRanks {
  std::vector<double> mean, max, min;
};
OverRanks reduce_over_ranks(castor::parallel::MpiComm& world, const std::vector<double>& v) {
  OverRanks r{v, v, v};
  world.all_reduce(r.mean.data(), v.size(), castor::ReduceOp::kSum);
  for (auto& x : r.mean) x /= world.size();
  world.all_reduce(r.max.data(), v.size(), castor::ReduceOp::kMax);
  for (auto& x : r.min) x = -x;
  world.all_reduce(r.min.data(), v.size(), castor::ReduceOp::kMax);
  for (auto& x : r.min) x = -x;
  return r;
}

int run(const DpOptions& o, castor::parallel::MpiComm& world) {
  const int ranks = world.size();
  const bool lead = world.rank() == 0;
  auto backend = castor::make_cpu_backend(o.threads);
  const castor::ModelConfig mc = dense_s_config();
  const castor::OptimConfig oc;  // defaults of `castor train`
  const int64_t B = kBatch, T = kSeq;

  castor::ParamStore store;
  castor::Transformer model(mc, store, *backend, B, T);
  store.allocate(*backend);
  store.initialize(o.seed);
  castor::AdamW optim(oc, store, *backend);
  const size_t n = store.numel();
  const size_t bucket_elems = std::max<size_t>(1, size_t(o.bucket_mb * 1e6 / sizeof(float)));

  if (lead) {
    std::printf(
        "castor dense-s data parallel: %d rank(s) x %d thread(s), batch %lld x %lld per rank, %.2fM params "
        "(%.1f MB of fp32 gradients)\n",
        ranks, castor::kernels::cpu::num_threads(), static_cast<long long>(B), static_cast<long long>(T),
        double(n) / 1e6, double(n) * 4 / 1e6);
    std::printf("modes (interleaved step by step): %s; steps per mode: %lld warmup + %lld timed\n", o.modes.c_str(),
                static_cast<long long>(o.warmup), static_cast<long long>(o.steps));
    // Where the buckets lie: bucket k can start once backward has finished the parameter
    // holding its first element (the arena is embeddings, blocks, final norm; backward
    // reports from the end, and the tied embedding's gradient is final only at the end).
    std::printf("gradient buckets of up to %.3g MB, cut from the arena's end:\n", o.bucket_mb);
    size_t k = 0;
    for (size_t end = n; end > 0; ++k) {
      const size_t begin = end > bucket_elems ? end - bucket_elems : 0;
      const castor::Param* first = nullptr;
      for (const auto& p : store.params())
        if (p.offset <= begin && begin < p.offset + size_t(p.numel())) first = &p;
      std::printf("  bucket %zu: elements [%zu, %zu), %.1f MB, first element in %s\n", k, begin, end,
                  double(end - begin) * 4 / 1e6, first ? first->name.c_str() : "?");
      end = begin;
    }
    std::fflush(stdout);
  }

  // A fixed pool of random token windows per rank (the ranks see different data, as dp).
  constexpr int kPool = 8;
  std::mt19937 rng{uint32_t(o.seed + uint64_t(world.rank()))};
  std::uniform_int_distribution<int32_t> token(0, int32_t(mc.vocab_size - 1));
  std::vector<std::vector<int32_t>> pool_ids(kPool), pool_targets(kPool);
  for (int p = 0; p < kPool; ++p) {
    pool_ids[p].resize(size_t(B * T));
    pool_targets[p].resize(size_t(B * T));
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int32_t> window(size_t(T + 1));
      for (auto& t : window) t = token(rng);
      std::copy(window.begin(), window.end() - 1, pool_ids[p].begin() + b * T);
      std::copy(window.begin() + 1, window.end(), pool_targets[p].begin() + b * T);
    }
  }

  const float grad_scale = 1.0f / float(B * T * ranks);  // the mean over the global batch
  const int64_t rounds = o.warmup + o.steps;
  const int64_t total_steps = rounds * int64_t(o.mode_list.size());
  const size_t S = size_t(o.steps);
  std::vector<double> times(3 * kFields * S, 0.0);
  auto slot = [&](Mode m, int f, size_t i) -> double& { return times[(size_t(m) * kFields + size_t(f)) * S + i]; };
  size_t buckets_total = 0, buckets_mid = 0;  // buckets_mid: started before backward's last ready_from(0)
  std::optional<castor::parallel::GradientBuckets> buckets;
  int64_t step = 0;
  for (int64_t round = 0; round < rounds; ++round) {
    for (const Mode mode : o.mode_list) {
      const auto& ids = pool_ids[size_t(step % kPool)];
      const auto& targets = pool_targets[size_t(step % kPool)];
      double ready_ms = 0.0;
      Clock::time_point bwd_end;
      world.barrier();  // every mode starts its step together (mode a has no other sync)
      const auto t0 = Clock::now();
      store.zero_grads();
      const auto t1 = Clock::now();
      const auto r = model.forward(ids.data(), targets.data(), B, T, &grad_scale);
      const auto t2 = Clock::now();
      if (mode != Mode::kCompute) buckets.emplace(world, store.grads(), n, bucket_elems);
      if (mode == Mode::kOverlap) {
        model.backward([&](size_t ready_from) {
          const auto a = Clock::now();
          if (ready_from == 0) {  // the end of backward: everything else is communication
            bwd_end = a;
            buckets_mid = buckets->started_before_finish();
            buckets->ready_from(0);
            return;
          }
          buckets->ready_from(ready_from);
          ready_ms += ms(a, Clock::now());
        });
      } else {
        model.backward();
      }
      const auto t3 = Clock::now();
      if (mode != Mode::kOverlap) bwd_end = t3;
      if (mode != Mode::kCompute) {
        buckets->finish();
        buckets_total = buckets->num_buckets();
      }
      const auto t4 = Clock::now();
      const double norm = optim.grad_norm();
      optim.step(castor::learning_rate(oc, step, total_steps), norm);
      const auto t5 = Clock::now();
      const double loss = r.loss_sum / double(r.count);
      CASTOR_CHECK(std::isfinite(loss), "loss is not finite at step ", step + 1, " (", loss, ")");
      ++step;
      if (round < o.warmup) continue;
      const size_t i = size_t(round - o.warmup);
      slot(mode, kZero, i) = ms(t0, t1);
      slot(mode, kFwd, i) = ms(t1, t2);
      slot(mode, kBwd, i) = ms(t2, bwd_end);
      slot(mode, kReady, i) = ready_ms;
      slot(mode, kTail, i) = ms(bwd_end, t4);
      slot(mode, kOpt, i) = ms(t4, t5);
      slot(mode, kStep, i) = ms(t0, t5);
    }
  }

  // Every rank's per-step times, combined per step over ranks: the mean for the phase
  // table, the slowest rank's step (the pace of a synchronous step) and the last-arriving
  // rank's communication after backward (the smallest over ranks: it waits for
  // communication only, not for a slower peer's backward). Then medians over the steps.
  const OverRanks over = reduce_over_ranks(world, times);
  if (!lead) return 0;
  auto med = [&](const std::vector<double>& v, Mode m, int f) {
    const auto first = v.begin() + std::ptrdiff_t((size_t(m) * kFields + size_t(f)) * S);
    return median(std::vector<double>(first, first + std::ptrdiff_t(S)));
  };
  auto has = [&](Mode m) { return std::find(o.mode_list.begin(), o.mode_list.end(), m) != o.mode_list.end(); };
  auto step_ms = [&](Mode m) { return med(over.max, m, kStep); };  // slowest rank
  auto comm_ms = [&](Mode m) { return med(over.min, m, kTail); };  // last-arriving rank

  std::printf(
      "\nmedians over %lld timed steps per mode, ms; phases: mean over the %d rank(s) per step; "
      "step: the slowest rank's\n\n",
      static_cast<long long>(o.steps), ranks);
  std::printf(
      "| mode | step | zero_grads | forward | backward | of it in ready_from | "
      "after backward: comm. mean / last rank | optimizer |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Mode m : {Mode::kCompute, Mode::kSerial, Mode::kOverlap}) {
    if (!has(m)) continue;
    const std::string ready = m == Mode::kOverlap ? fixed1(med(over.mean, m, kReady)) : "-";
    const std::string tail = m == Mode::kCompute ? "-" : fixed1(med(over.mean, m, kTail)) + " / " + fixed1(comm_ms(m));
    std::printf("| %s | %.1f | %.1f | %.1f | %.1f | %s | %s | %.1f |\n", kModeName[int(m)], step_ms(m),
                med(over.mean, m, kZero), med(over.mean, m, kFwd), med(over.mean, m, kBwd), ready.c_str(), tail.c_str(),
                med(over.mean, m, kOpt));
  }

  const double tokens = double(B * T * ranks);
  std::string result = "RESULT impl=castor_dp ranks=" + std::to_string(ranks) +
                       " threads=" + std::to_string(castor::kernels::cpu::num_threads());
  char kv[160];
  auto put = [&](const char* key, double v) {
    std::snprintf(kv, sizeof(kv), " %s=%.6g", key, v);
    result += kv;
  };
  if (has(Mode::kCompute)) {
    std::printf("\ncompute only: %.1f ms/step, %.1f tokens/s over %d rank(s) x %d thread(s)\n", step_ms(Mode::kCompute),
                tokens / (step_ms(Mode::kCompute) / 1e3), ranks, castor::kernels::cpu::num_threads());
    put("compute_ms", step_ms(Mode::kCompute));
    put("compute_tokens_per_s", tokens / (step_ms(Mode::kCompute) / 1e3));
  }
  if (has(Mode::kSerial) && has(Mode::kOverlap) && has(Mode::kCompute)) {
    const double compute = step_ms(Mode::kCompute), serial = step_ms(Mode::kSerial);
    const double overlap = step_ms(Mode::kOverlap);
    const double comm = comm_ms(Mode::kSerial), comm_diff = serial - compute;
    const double exposed = comm_ms(Mode::kOverlap), exposed_diff = overlap - compute;
    const double hidden = 1.0 - exposed / comm, hidden_diff = 1.0 - exposed_diff / comm_diff;
    const double ready = med(over.mean, Mode::kOverlap, kReady);
    std::printf("\n| quantity | ms | how |\n|---|---:|---|\n");
    std::printf("| compute (a) | %.1f | step, no communication |\n", compute);
    std::printf("| communication (b) | %.1f | finish() of the last-arriving rank: all %zu buckets after backward |\n",
                comm, buckets_total);
    std::printf("| communication (b) - (a) | %.1f | step difference |\n", comm_diff);
    std::printf(
        "| exposed (c) | %.1f | last ready_from(0) + finish() of the last-arriving rank; %zu of %zu buckets "
        "started before it |\n",
        exposed, buckets_mid, buckets_total);
    std::printf("| exposed (c) - (a) | %.1f | step difference (includes ready_from and any slower compute) |\n",
                exposed_diff);
    std::printf("| ready_from during backward (c) | %.1f | polling the started buckets (MPI progress) |\n", ready);
    std::printf("| backward (c) - (a) | %.1f | includes ready_from during backward |\n",
                med(over.mean, Mode::kOverlap, kBwd) - med(over.mean, Mode::kCompute, kBwd));
    std::printf(
        "\nhidden share: %.1f%% by the communication after backward (1 - exposed / communication), %.1f%% by "
        "step differences\n",
        100 * hidden, 100 * hidden_diff);
    std::printf("tokens/s over %d ranks: overlapped %.1f, serial %.1f, no communication %.1f\n", ranks,
                tokens / (overlap / 1e3), tokens / (serial / 1e3), tokens / (compute / 1e3));
    put("serial_ms", serial);
    put("overlap_ms", overlap);
    put("comm_ms", comm);
    put("comm_diff_ms", comm_diff);
    put("exposed_ms", exposed);
    put("exposed_diff_ms", exposed_diff);
    put("ready_ms", ready);
    put("hidden", hidden);
    put("hidden_diff", hidden_diff);
    put("overlap_tokens_per_s", tokens / (overlap / 1e3));
    put("serial_tokens_per_s", tokens / (serial / 1e3));
    result += " buckets=" + std::to_string(buckets_total) + " buckets_mid=" + std::to_string(buckets_mid);
  }
  std::printf("%s\n", result.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  castor::parallel::MpiSession session(&argc, &argv);
  const bool lead = session.world_rank() == 0;
  try {
    DpOptions o;
    if (!parse_options(argc, argv, o, session.world_size(), lead)) return 0;
    castor::parallel::MpiComm world(MPI_COMM_WORLD, "world");
    return run(o, world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "castor_bench_dp_overlap: rank %d: error: %s\n", session.world_rank(), e.what());
    castor::parallel::MpiSession::abort_job(1);
  }
}
