// The training loop of `castor train`, alone or under mpirun with data parallelism: each
// dp rank reads its slice of the global batch, gradients are summed over dp in buckets,
// and every rank applies the same update. Rank 0 logs (step, loss, lr, grad norm,
// tokens/s, MFU, peak memory), writes metrics.jsonl and checkpoints.
#include "launch/commands.h"

#include <sched.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include "core/model.h"
#include "core/optimizer.h"
#include "io/checkpoint.h"
#include "io/checkpoint_file.h"
#include "io/loader.h"
#include "kernels/cpu/gemm.h"
#include "launch/metrics.h"
#include "launch/options.h"
#include "parallel/data_parallel.h"
#include "parallel/mesh.h"
#include "parallel/mpi_comm.h"
#include "parallel/process_groups.h"

namespace castor::launch {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Mean loss over `batches` fixed validation micro-batches (the first windows in order).
double evaluate(Transformer& model, io::Loader& val, int64_t B, int64_t T, int64_t batches) {
  val.set_cursor({0, 0});
  double loss = 0.0;
  int64_t count = 0;
  io::Batch batch;
  for (int64_t i = 0; i < batches; ++i) {
    val.next(batch);
    auto r = model.forward(batch.ids.data(), batch.targets.data(), B, T, nullptr);
    loss += r.loss_sum;
    count += r.count;
  }
  return loss / double(std::max<int64_t>(count, 1));
}

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& out_dir) {
    if (!out_dir.empty()) file_.open(out_dir + "/metrics.jsonl", std::ios::app);
  }
  template <typename... KV>
  void write(const char* fmt, KV... kv) {
    if (!file_.is_open()) return;
    char line[512];
    std::snprintf(line, sizeof(line), fmt, kv...);
    file_ << line << "\n";
    file_.flush();
  }

 private:
  std::ofstream file_;
};

}  // namespace

int train_command(const std::vector<std::string>& args) {
  TrainOptions opt;
  if (!parse_train_options(args, opt)) return 0;
  ModelConfig& mc = opt.model;
  const TrainConfig& tc = opt.train;
  opt.optim.validate();
  opt.parallel.validate();

  // The process layout: validated before any work, with every degree in the message.
  parallel::MpiComm world(MPI_COMM_WORLD, "world", opt.parallel.timeout_s);
  const parallel::Mesh mesh({opt.parallel.tp, opt.parallel.dp, opt.parallel.pp, opt.parallel.ep}, world.size());
  CASTOR_CHECK(mesh.shape().tp == 1 && mesh.shape().pp == 1 && mesh.shape().ep == 1, "layout ",
               mesh.shape().str(), " on ", world.size(),
               " ranks: this version trains with data parallelism only (tensor, pipeline and expert parallelism "
               "come next); use --parallel.tp 1 --parallel.pp 1 --parallel.ep 1");
  const parallel::ProcessGroups groups = parallel::ProcessGroups::build(mesh, world);
  const int dp = mesh.shape().dp;
  const bool lead = world.rank() == 0;
  if (!lead) std::freopen("/dev/null", "w", stdout);  // rank 0 logs; errors still go to stderr

  auto backend = make_cpu_backend(tc.threads);
  // mpirun binds each rank to one core by default: threads beyond the cores a rank may
  // use share them (half speed at 2 threads on 1 core, docs/config.md).
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) < kernels::cpu::num_threads())
    std::fprintf(stderr, "castor: warning: rank %d runs %d threads on %d core(s); under mpirun pass --bind-to none\n",
                 world.rank(), kernels::cpu::num_threads(), CPU_COUNT(&allowed));
  CASTOR_CHECK(!tc.train_data.empty(), "--data.train is required (a shard file or a directory of shards)");
  // The text model takes no image or audio input (image patch and audio stack 0), so the
  // loader refuses multimodal shards with a message naming the file.
  io::LoaderOptions lo;
  lo.seq_len = tc.seq_len;
  lo.batch_size = tc.micro_batch;
  lo.seed = tc.seed;
  lo.dp_rank = groups.coord.dp;
  lo.dp_size = dp;
  io::Loader train_data(tc.train_data, lo);
  if (mc.vocab_size == 0) mc.vocab_size = train_data.vocab_size();
  CASTOR_CHECK(mc.vocab_size >= train_data.vocab_size(), "--model.vocab_size (", mc.vocab_size,
               ") is smaller than the data's vocabulary (", train_data.vocab_size(), ", tokenizer ",
               train_data.tokenizer(), ")");
  mc.validate();
  tc.validate(mc);
  std::unique_ptr<io::Loader> val_data;
  if (!tc.val_data.empty()) {
    lo.shuffle = false;
    lo.dp_rank = 0;  // every rank evaluates the same windows: the value does not depend on dp
    lo.dp_size = 1;
    val_data = std::make_unique<io::Loader>(tc.val_data, lo);
    CASTOR_CHECK(val_data->tokenizer() == train_data.tokenizer(), "--data.val: tokenizer ", val_data->tokenizer(),
                 " differs from --data.train's ", train_data.tokenizer());
  }

  const int64_t B = tc.micro_batch, T = tc.seq_len;
  ParamStore store;
  Transformer model(mc, store, *backend, B, T);
  store.allocate(*backend, parallel::DataParallel::arena_pad(dp));
  store.initialize(tc.seed);
  const size_t bucket_elems = std::max<size_t>(1, size_t(opt.parallel.bucket_mb * 1e6 / sizeof(float)));
  parallel::DataParallel sync(*groups.dp, store, *backend, opt.parallel.zero, bucket_elems);
  AdamW optim = sync.make_optimizer(opt.optim);

  io::TrainState state;
  state.seed = tc.seed;
  if (!tc.out_dir.empty()) std::filesystem::create_directories(tc.out_dir);
  if (tc.resume) {
    const std::string latest = io::latest_checkpoint(tc.out_dir);
    if (latest.empty()) {
      std::printf("resume: no checkpoint in %s, starting from scratch\n", tc.out_dir.c_str());
    } else {
      if (sync.stage() == 0) {
        const ArenaMoments moments = optim.whole_moments();
        io::load_checkpoint(latest, mc, store, &moments, &state);
      } else {  // whole moments from the file, then this rank's shard of them
        Buffer m(*backend, store.arena_elems() * sizeof(float)), v(*backend, store.arena_elems() * sizeof(float));
        const ArenaMoments moments{m.f32(), v.f32()};
        io::load_checkpoint(latest, mc, store, &moments, &state);
        sync.scatter_moments(optim, moments);
      }
      optim.set_steps_taken(state.optim_steps);
      CASTOR_CHECK(state.seed == tc.seed, latest, ": checkpoint seed ", state.seed, " differs from --train.seed ",
                   tc.seed);
      train_data.set_cursor(state.cursor);
      std::printf("resumed from %s at step %lld\n", latest.c_str(), static_cast<long long>(state.step));
    }
  }

  const double peak_flops = measure_sgemm_peak();
  const double flops_per_token = model_flops_per_token(mc, T);
  std::printf("model: %s, %lld layers, d_model %lld, heads %lld/%lld, vocab %lld, %.2fM params (%.2fM non-embedding)\n",
              family_name(mc.family).c_str(), static_cast<long long>(mc.n_layers),
              static_cast<long long>(mc.d_model), static_cast<long long>(mc.n_heads),
              static_cast<long long>(mc.kv_heads()), static_cast<long long>(mc.vocab_size),
              double(store.numel()) / 1e6, double(mc.non_embedding_params()) / 1e6);
  std::printf("data: %lld training tokens (%lld sequences of %lld), tokenizer %s; batch %lld x %lld x accum %lld x dp %d\n",
              static_cast<long long>(train_data.stream_positions()), static_cast<long long>(train_data.windows_per_epoch()),
              static_cast<long long>(T), train_data.tokenizer().c_str(), static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(tc.grad_accum), dp);
  std::printf("layout: %s on %d ranks; %s\n", mesh.shape().str().c_str(), world.size(), sync.describe().c_str());
  const parallel::StateMemory mem = sync.memory(optim);
  constexpr double kMiB = 1024.0 * 1024.0;
  std::printf("state per rank: weights %.1f MiB, gradients %.1f MiB%s, AdamW moments %.1f MiB; total %.1f MiB\n",
              double(mem.weights) / kMiB, double(mem.grads) / kMiB,
              sync.stage() == 2 ? " (+ the buckets backward is writing)" : "", double(mem.moments) / kMiB,
              double(mem.total()) / kMiB);
  std::printf("threads: %d, measured SGEMM peak %.1f GFLOP/s (MFU reference)\n", kernels::cpu::num_threads(),
              peak_flops / 1e9);
  std::fflush(stdout);

  MetricsLog metrics(lead ? tc.out_dir : std::string());
  // The mean over the global batch: dp ranks x accumulation x B x T tokens.
  const float grad_scale = 1.0f / float(B * T * tc.grad_accum * dp);
  auto t_log = Clock::now();
  const auto t_start = Clock::now();
  int64_t tokens_since_log = 0, tokens_total = 0;
  double last_val = std::nan(""), last_loss = std::nan("");

  auto run_eval = [&](int64_t step) {
    if (!val_data) return;
    last_val = evaluate(model, *val_data, B, T, tc.eval_batches);
    std::printf("step %6lld | val loss %.6f\n", static_cast<long long>(step), last_val);
    std::fflush(stdout);
    metrics.write("{\"step\": %lld, \"val_loss\": %.6f}", static_cast<long long>(step), last_val);
  };
  auto save = [&](int64_t step) {
    if (tc.out_dir.empty()) return;
    const ArenaMoments moments = sync.gather_moments(optim);  // every rank joins under ZeRO
    if (!lead) return;  // every rank now holds the same whole state
    state.step = step;
    state.optim_steps = optim.steps_taken();
    state.cursor = train_data.cursor();
    const std::string path = io::checkpoint_path(tc.out_dir, step);
    io::save_checkpoint(path, mc, store, &moments, state);
    std::printf("saved %s\n", path.c_str());
  };

  const int64_t first_step = state.step;
  io::Batch batch;  // reused: the loader refills its buffers
  for (int64_t step = first_step; step < tc.steps; ++step) {
    sync.zero_grads();
    double loss_sum = 0.0;
    int64_t count = 0;
    for (int64_t micro = 0; micro < tc.grad_accum; ++micro) {
      train_data.next(batch);
      auto r = model.forward(batch.ids.data(), batch.targets.data(), B, T, &grad_scale);
      sync.backward(model, micro + 1 == tc.grad_accum);  // reductions overlap backward
      loss_sum += r.loss_sum;
      count += r.count;
    }
    if (dp > 1) {
      double sums[2] = {loss_sum, double(count)};
      groups.dp->all_reduce(sums, 2, ReduceOp::kSum);
      loss_sum = sums[0];
      count = int64_t(sums[1]);
    }
    const double loss = loss_sum / double(count);
    CASTOR_CHECK(std::isfinite(loss), "training loss is not finite at step ", step + 1, " (", loss,
                 "); lower --optim.lr or check the data");
    const double norm = sync.grad_norm(optim);
    const float lr = learning_rate(opt.optim, step, tc.steps);
    optim.step(lr, norm);
    sync.after_step();
    last_loss = loss;
    tokens_since_log += B * T * tc.grad_accum * dp;
    tokens_total += B * T * tc.grad_accum * dp;

    const int64_t done = step + 1;
    if (done % tc.log_every == 0 || done == tc.steps) {
      const double dt = seconds_since(t_log);
      const double tps = double(tokens_since_log) / dt;
      const double mfu = tps / dp * flops_per_token / peak_flops;  // per rank, against one rank's peak
      std::printf("step %6lld/%lld | loss %.6f | lr %.4e | grad norm %.4f | %.0f tok/s | MFU %.1f%% | peak mem %.0f MiB\n",
                  static_cast<long long>(done), static_cast<long long>(tc.steps), loss, double(lr), norm, tps,
                  100.0 * mfu, double(peak_rss_bytes()) / (1 << 20));
      std::fflush(stdout);
      metrics.write("{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, "
                    "\"mfu\": %.4f, \"peak_rss_bytes\": %lld}",
                    static_cast<long long>(done), loss, double(lr), norm, tps, mfu,
                    static_cast<long long>(peak_rss_bytes()));
      t_log = Clock::now();
      tokens_since_log = 0;
    }
    if (tc.eval_every > 0 && done % tc.eval_every == 0 && done != tc.steps) run_eval(done);
    if (tc.exit_after > 0 && done - first_step == tc.exit_after && done != tc.steps) {
      save(done);
      std::printf("exiting after %lld steps (--train.exit_after); continue with --train.resume\n",
                  static_cast<long long>(tc.exit_after));
      return 0;
    }
    if (tc.ckpt_every > 0 && done % tc.ckpt_every == 0 && done != tc.steps) save(done);
  }
  run_eval(tc.steps);
  save(tc.steps);
  const double elapsed = seconds_since(t_start);
  std::printf("done: %lld steps, final train loss %.6f", static_cast<long long>(tc.steps), last_loss);
  if (val_data) std::printf(", final val loss %.6f", last_val);
  std::printf(", %.1f s, %.0f tok/s, peak mem %.0f MiB\n", elapsed, double(tokens_total) / std::max(elapsed, 1e-9),
              double(peak_rss_bytes()) / (1 << 20));
  return 0;
}

}  // namespace castor::launch
