// castor_bench_loader: throughput of io::Loader (io/loader.h) on a directory of corpus
// shards. Constructs the loader as `castor train` does (shuffled windows of seq_len + 1,
// rank 0 of --dp-size) and calls next() in a loop for --seconds after a warm-up; the
// consumer does nothing with a batch but touch a few values. Reported per mode:
// batches/s, positions/s, text tokens/s (Batch::text_tokens()), images/s (images whose
// patches are in the batch: patch_grid == (0, 0) entries), audio seconds/s (audio
// positions x audio_stack x hop_length / sample_rate, from the first shard with audio),
// the CPU time of the consumer and of the prefetch thread, and minor page faults. One
// mode per process: --prefetch N (consumer + prefetch thread) or --prefetch 0 (everything
// in next()); bench/data.sh runs both, each in a fresh process, because a mode run after
// another inherits the allocator's state (mmap/trim thresholds), which changes the
// page-fault count of the large image/audio batches several-fold.
// With --dense-tps X it also prints what a model training at X positions/s consumes of
// each modality and the loader's rate over it. The last lines, "RESULT key=value ...",
// are what bench/data.sh reads. Not a test: no assertions on timings.
#include <sys/resource.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/loader.h"
#include "io/shard.h"
#include "launch/metrics.h"

namespace po = boost::program_options;
namespace io = castor::io;

namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string data;
  int64_t seq_len = 1024, batch = 8;
  double seconds = 5.0, warmup = 1.0;
  int prefetch = 2;
  int64_t image_patch = 0, audio_stack = 0;
  int dp_size = 1;
  uint64_t seed = 1337;
  double dense_tps = 0.0;  // positions/s a training run consumes (0: no ratio table)
  std::string label;       // name printed in the RESULT lines (default: the data path)
};

bool parse_options(int argc, char** argv, BenchOptions& o) {
  po::options_description desc(
      "castor_bench_loader: io::Loader throughput on corpus shards (--prefetch N: consumer + prefetch thread; 0: "
      "synchronous)\n"
      "Usage: castor_bench_loader --data DIR --seq-len T --batch B --seconds S [options]");
  auto add = desc.add_options();
  add("help,h", "print this help and exit");
  add("data", po::value(&o.data), "a shard file or a directory of *.h5 shards");
  add("seq-len", po::value(&o.seq_len)->default_value(o.seq_len), "T: positions per sequence");
  add("batch", po::value(&o.batch)->default_value(o.batch), "B: sequences per next()");
  add("seconds", po::value(&o.seconds)->default_value(o.seconds), "timed seconds");
  add("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed seconds of next() first (at least 2 batches)");
  add("prefetch", po::value(&o.prefetch)->default_value(o.prefetch),
      "batches prepared ahead on the loader's thread (0: synchronous, everything inside next())");
  add("image-patch", po::value(&o.image_patch)->default_value(o.image_patch), "P: image patch size (0: refuse images)");
  add("audio-stack", po::value(&o.audio_stack)->default_value(o.audio_stack),
      "log-mel frames per audio position (0: refuse audio)");
  add("dp-size", po::value(&o.dp_size)->default_value(o.dp_size),
      "data-parallel size; the loader is rank 0's (reads B of every dp-size x B windows)");
  add("seed", po::value(&o.seed)->default_value(o.seed), "window shuffle seed");
  add("dense-tps", po::value(&o.dense_tps)->default_value(o.dense_tps),
      "training positions/s to compare with (e.g. the dense-s tok/s of `castor train`); 0: no ratio table");
  add("label", po::value(&o.label), "name of this corpus in the RESULT lines (default: --data)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  po::notify(vm);
  CASTOR_CHECK(!o.data.empty(), "--data is required (a shard file or a directory of shards)");
  CASTOR_CHECK(o.seq_len > 0 && o.batch > 0, "--seq-len and --batch must be positive");
  CASTOR_CHECK(o.seconds > 0 && o.warmup >= 0, "--seconds must be > 0 and --warmup >= 0");
  CASTOR_CHECK(o.prefetch >= 0, "--prefetch must be >= 0 (got ", o.prefetch, ")");
  CASTOR_CHECK(o.dp_size >= 1, "--dp-size must be >= 1 (got ", o.dp_size, ")");
  CASTOR_CHECK(o.dense_tps >= 0, "--dense-tps must be >= 0 (got ", o.dense_tps, ")");
  for (char& c : o.label) c = (c == ' ') ? '_' : c;
  if (o.label.empty()) o.label = o.data;
  return true;
}

double cpu_seconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double sys_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_stime.tv_sec) + 1e-6 * double(u.ru_stime.tv_usec);
}

int64_t minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_minflt);
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// What the corpus holds, from the shards' tables (never their payload).
struct CorpusInfo {
  int64_t shards = 0, images = 0, audio = 0;
  int64_t patches_per_image = 0;  // of the first image, (H/P)(W/P)
  double audio_seconds = 0.0;     // sum of the clips' lengths
  std::optional<io::LogMelConfig> mel;
};

CorpusInfo corpus_info(const BenchOptions& o) {
  CorpusInfo c;
  for (const std::string& file : io::list_shards(o.data)) {
    const io::ShardReader r(file);
    ++c.shards;
    if (c.patches_per_image == 0 && r.num_images() > 0 && o.image_patch > 0) {
      const auto s = r.image_shape(0);
      c.patches_per_image = (s[0] / o.image_patch) * (s[1] / o.image_patch);
    }
    c.images += r.num_images();
    c.audio += r.num_audio();
    if (r.num_audio() > 0) {
      if (!c.mel) c.mel = r.audio_config();
      c.audio_seconds += double(r.total_audio_samples()) / double(r.audio_config()->sample_rate);
    }
  }
  return c;
}

struct ModeResult {
  std::string mode;
  int prefetch = 0;
  double open_s = 0, wall_s = 0;
  int64_t batches = 0, positions = 0, text = 0, images = 0, patches = 0, audio_positions = 0, pad = 0;
  double batch_mb = 0;                   // bytes of the batches handed out, MB
  double cpu_consumer = 0, cpu_all = 0;  // CPU seconds in the timed span
  double cpu_sys = 0;                    // of which in the kernel (whole process)
  int64_t minflt = 0;                    // minor page faults in the timed span (whole process)
  double wait_s = 0;                     // consumer time inside next()
  double checksum = 0;
};

// The consumer's whole use of a batch: a few values summed so nothing is optimised away.
double touch(const io::Batch& b) {
  double s = 0;
  const size_t n = b.ids.size();
  for (size_t i = 0; i < n; i += 251) s += double(b.ids[i]) + double(b.targets[i]) + double(b.position[i]);
  if (!b.patches.empty()) s += double(b.patches[b.patches.size() / 2]);
  if (!b.frames.empty()) s += double(b.frames[b.frames.size() / 2]);
  return s;
}

ModeResult run_mode(const BenchOptions& o, int prefetch) {
  io::LoaderOptions lo;
  lo.seq_len = o.seq_len;
  lo.batch_size = o.batch;
  lo.seed = o.seed;
  lo.shuffle = true;
  lo.dp_rank = 0;
  lo.dp_size = o.dp_size;
  lo.prefetch = prefetch;
  lo.image_patch = o.image_patch;
  lo.audio_stack = o.audio_stack;

  ModeResult m;
  m.prefetch = prefetch;
  m.mode = prefetch > 0 ? "prefetch" + std::to_string(prefetch) : "sync";
  const auto t_open = Clock::now();
  io::Loader loader(o.data, lo);
  m.open_s = seconds_since(t_open);

  double sink = 0;
  const auto t_warm = Clock::now();
  for (int64_t i = 0; i < 2 || seconds_since(t_warm) < o.warmup; ++i) sink += touch(loader.next());

  const double cpu_c0 = cpu_seconds(RUSAGE_THREAD), cpu_a0 = cpu_seconds(RUSAGE_SELF), sys0 = sys_seconds();
  const int64_t flt0 = minor_faults();
  const auto t0 = Clock::now();
  double wait = 0;
  while (true) {
    const auto t_call = Clock::now();
    const io::Batch b = loader.next();
    wait += seconds_since(t_call);
    ++m.batches;
    m.positions += b.B * b.T;
    m.text += b.text_tokens();
    for (size_t k = 0; k + 1 < b.patch_grid.size(); k += 2)
      if (b.patch_grid[k] == 0 && b.patch_grid[k + 1] == 0) ++m.images;
    m.patches += int64_t(b.patch_pos.size());
    m.audio_positions += int64_t(b.frame_pos.size());
    m.pad += std::count(b.modality.begin(), b.modality.end(), uint8_t(io::Modality::pad));
    m.batch_mb += double(b.ids.size() * 4 * 4 + b.modality.size() + b.patches.size() * 4 + b.patch_pos.size() * 4 +
                         b.patch_grid.size() * 4 + b.frames.size() * 4 + b.frame_pos.size() * 4) /
                  1e6;
    sink += touch(b);
    if (seconds_since(t0) >= o.seconds) break;
  }
  m.wall_s = seconds_since(t0);
  m.cpu_consumer = cpu_seconds(RUSAGE_THREAD) - cpu_c0;
  m.cpu_all = cpu_seconds(RUSAGE_SELF) - cpu_a0;
  m.cpu_sys = sys_seconds() - sys0;
  m.minflt = minor_faults() - flt0;
  m.wait_s = wait;
  m.checksum = sink;
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    BenchOptions o;
    if (!parse_options(argc, argv, o)) return 0;
    const CorpusInfo c = corpus_info(o);
    // Audio: seconds of sound per audio position.
    const double audio_s_per_pos =
        c.mel && o.audio_stack > 0 ? double(o.audio_stack * c.mel->hop_length) / double(c.mel->sample_rate) : 0.0;

    {
      io::LoaderOptions lo;
      lo.seq_len = o.seq_len;
      lo.batch_size = o.batch;
      lo.prefetch = 0;
      lo.image_patch = o.image_patch;
      lo.audio_stack = o.audio_stack;
      const io::Loader probe(o.data, lo);
      std::printf(
          "castor loader bench: %s: %lld shard(s), %lld documents, %lld stream positions = %lld windows of %lld + 1, "
          "tokenizer %s",
          o.data.c_str(), static_cast<long long>(c.shards), static_cast<long long>(probe.num_documents()),
          static_cast<long long>(probe.stream_positions()), static_cast<long long>(probe.windows_per_epoch()),
          static_cast<long long>(o.seq_len), probe.tokenizer().c_str());
      if (c.images > 0)
        std::printf(", %lld images (%lld patches of %lld each)", static_cast<long long>(c.images),
                    static_cast<long long>(c.patches_per_image), static_cast<long long>(o.image_patch));
      if (c.audio > 0)
        std::printf(", %lld audio clips (%.0f s; %lld Hz, hop %lld, %lld frames per position = %.0f positions/s)",
                    static_cast<long long>(c.audio), c.audio_seconds, static_cast<long long>(c.mel->sample_rate),
                    static_cast<long long>(c.mel->hop_length), static_cast<long long>(o.audio_stack),
                    1.0 / audio_s_per_pos);
      std::printf("\nbatch %lld x %lld, rank 0 of dp %d, seed %llu; %.1f s warm-up, %.1f s timed\n\n",
                  static_cast<long long>(o.batch), static_cast<long long>(o.seq_len), o.dp_size,
                  static_cast<unsigned long long>(o.seed), o.warmup, o.seconds);
    }
    std::fflush(stdout);

    std::vector<ModeResult> results;
    results.push_back(run_mode(o, o.prefetch));

    std::printf("%-10s %8s %9s %12s %12s %10s %10s %9s %8s %8s %8s %8s %9s %7s\n", "mode", "open ms", "batches/s",
                "positions/s", "text tok/s", "images/s", "audio s/s", "batch MB/s", "cpu cons", "cpu all", "cpu sys",
                "wait", "flt/batch", "pad %");
    for (const ModeResult& m : results) {
      const double w = m.wall_s;
      std::printf("%-10s %8.1f %9.1f %12.0f %12.0f %10.0f %10.1f %9.1f %7.0f%% %7.0f%% %7.0f%% %7.0f%% %9.0f %6.1f%%\n",
                  m.mode.c_str(), 1e3 * m.open_s, double(m.batches) / w, double(m.positions) / w, double(m.text) / w,
                  double(m.images) / w, double(m.audio_positions) * audio_s_per_pos / w, m.batch_mb / w,
                  100 * m.cpu_consumer / w, 100 * m.cpu_all / w, 100 * m.cpu_sys / w, 100 * m.wait_s / w,
                  double(m.minflt) / double(m.batches),
                  100.0 * double(m.pad) / double(std::max<int64_t>(m.positions, 1)));
    }
    std::printf(
        "(cpu cons / all / sys: CPU time of the consumer thread / of the whole process / of the process in the kernel, "
        "over the timed wall time; wait: consumer time inside next(); flt/batch: minor page faults per batch; pad: "
        "positions that are padding)\n");

    const ModeResult& main_mode = results.front();
    const double w = main_mode.wall_s;
    if (o.dense_tps > 0) {
      std::printf("\nagainst a model training at %.1f positions/s (--dense-tps), loader mode %s:\n", o.dense_tps,
                  main_mode.mode.c_str());
      std::printf("| modality | loader | model consumes | loader / model |\n|---|---:|---:|---:|\n");
      auto row = [&](const char* name, double loader, double model, const char* unit) {
        std::printf("| %s | %.1f %s | %.1f %s | %.1fx |\n", name, loader, unit, model, unit, loader / model);
      };
      row("positions (this corpus's mix)", double(main_mode.positions) / w, o.dense_tps, "pos/s");
      if (main_mode.text > 0) row("text tokens", double(main_mode.text) / w, o.dense_tps, "tok/s");
      if (c.images > 0 && c.patches_per_image > 0)
        row("images", double(main_mode.images) / w, o.dense_tps / double(c.patches_per_image), "images/s");
      if (c.audio > 0 && audio_s_per_pos > 0)
        row("audio", double(main_mode.audio_positions) * audio_s_per_pos / w, o.dense_tps * audio_s_per_pos,
            "audio s/s");
      std::printf("(model consumes, X = --dense-tps: text X tok/s");
      if (c.patches_per_image > 0)
        std::printf("; images X / %lld patch positions per image", static_cast<long long>(c.patches_per_image));
      if (audio_s_per_pos > 0) std::printf("; audio X positions/s x %.3f s of sound per position", audio_s_per_pos);
      std::printf(": the rate if every position were of that modality)\n");
    }

    for (const ModeResult& m : results) {
      const double mw = m.wall_s;
      std::printf(
          "RESULT corpus=%s mode=%s prefetch=%d seq_len=%lld batch=%lld dp=%d open_ms=%.1f batches=%lld "
          "batches_per_s=%.2f positions_per_s=%.1f text_tokens_per_s=%.1f images_per_s=%.2f audio_s_per_s=%.3f "
          "batch_mb_per_s=%.2f cpu_consumer=%.3f cpu_all=%.3f cpu_sys=%.3f wait=%.3f minflt_per_batch=%.1f pad=%.4f "
          "patches_per_image=%lld audio_s_per_pos=%.5f dense_tps=%.1f checksum=%.6g\n",
          o.label.c_str(), m.mode.c_str(), m.prefetch, static_cast<long long>(o.seq_len),
          static_cast<long long>(o.batch), o.dp_size, 1e3 * m.open_s, static_cast<long long>(m.batches),
          double(m.batches) / mw, double(m.positions) / mw, double(m.text) / mw, double(m.images) / mw,
          double(m.audio_positions) * audio_s_per_pos / mw, m.batch_mb / mw, m.cpu_consumer / mw, m.cpu_all / mw,
          m.cpu_sys / mw, m.wait_s / mw, double(m.minflt) / double(m.batches),
          double(m.pad) / double(std::max<int64_t>(m.positions, 1)), static_cast<long long>(c.patches_per_image),
          audio_s_per_pos, o.dense_tps, m.checksum);
    }
    std::printf("peak RSS %.1f MiB\n", double(castor::launch::peak_rss_bytes()) / (1024.0 * 1024.0));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "castor_bench_loader: error: %s\n", e.what());
    return 1;
  }
}
