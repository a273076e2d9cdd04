// The training loop of `castor train`, alone or under mpirun with data parallelism: each
// dp rank reads its slice of the global batch, gradients are summed over dp in buckets,
// and every rank applies the same update. Rank 0 logs (step, loss and its terms, lr, grad
// norm, tokens/s, MFU, expert load, peak memory), writes metrics.jsonl and checkpoints.
// Stages: pretraining from scratch, or fine-tuning (--train.init_from) with any loss mix,
// e.g. alignment and distillation from a teacher checkpoint (--loss.teacher).
#include "launch/commands.h"

#include <sched.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#ifdef CASTOR_WITH_CUDA
#include "core/cuda/cuda_backend.h"
#endif
#ifdef CASTOR_WITH_NCCL
#include "parallel/nccl/nccl_comm.h"
#endif
#include "core/loss_scale.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "io/checkpoint.h"
#include "io/checkpoint_file.h"
#include "io/loader.h"
#include "kernels/cpu/gemm.h"
#include "launch/loss_log.h"
#include "launch/metrics.h"
#include "launch/options.h"
#include "parallel/data_parallel.h"
#include "parallel/mesh.h"
#include "parallel/mpi_comm.h"
#include "parallel/logical_state.h"
#include "parallel/process_groups.h"
#include "parallel/tensor_parallel.h"

namespace castor::launch {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Loss terms over `batches` fixed validation micro-batches (the first windows of the
// validation set's seeded order).
LossLog evaluate(Transformer& model, io::Loader& val, const LossConfig& losses, uint64_t seed, int64_t batches) {
  val.set_cursor({0, 0});
  LossLog log;
  io::Batch batch;
  for (int64_t i = 0; i < batches; ++i) {
    val.next(batch);
    log.add(model.forward(batch.view(), losses, nullptr, seed), model.moe_stats());
  }
  return log;
}

io::LoaderOptions loader_options(const TrainConfig& tc, const ModelConfig& mc, int dp_rank, int dp) {
  io::LoaderOptions lo;
  lo.seq_len = tc.seq_len;
  lo.batch_size = tc.micro_batch;
  lo.seed = tc.seed;
  lo.dp_rank = dp_rank;
  lo.dp_size = dp;
  lo.image_patch = mc.image_patch;  // 0: the loader refuses shards with images, naming the file
  lo.audio_stack = mc.audio_stack;
  return lo;
}

// The adapters must fit the data: image channels and grid, log-mel bands.
void check_media_fit(ModelConfig& mc, const io::Loader& data, const std::string& path) {
  if (data.num_images() > 0) {
    CASTOR_CHECK(data.image_channels() == mc.image_channels, path, ": images have ", data.image_channels(),
                 " channels but --model.image_channels is ", mc.image_channels);
    CASTOR_CHECK(data.max_image_grid() <= mc.image_grid_size(), path, ": images span up to ", data.max_image_grid(),
                 " patches of ", mc.image_patch, " pixels per side, more than --model.image_grid (",
                 mc.image_grid_size(), ")");
  }
  if (data.num_audio() > 0) {
    if (mc.n_mels == 0) mc.n_mels = data.n_mels();
    CASTOR_CHECK(data.n_mels() == mc.n_mels, path, ": audio has ", data.n_mels(), " log-mel bands but --model.n_mels is ",
                 mc.n_mels);
  }
}

std::string describe_model(const ModelConfig& mc) {
  std::string s;
  char buf[256];
  if (mc.moe_experts > 0) {
    std::snprintf(buf, sizeof buf, "; MoE: %lld experts top-%lld in %lld of %lld layers, expert d_ff %lld, ",
                  static_cast<long long>(mc.moe_experts), static_cast<long long>(mc.moe_top_k),
                  static_cast<long long>(mc.moe_layers()), static_cast<long long>(mc.n_layers),
                  static_cast<long long>(mc.expert_ffn_dim()));
    s += buf;
    std::snprintf(buf, sizeof buf, mc.moe_capacity > 0 ? "capacity %g" : "dropless", mc.moe_capacity);
    s += buf;
    if (mc.moe_shared_expert) s += ", shared expert";
  }
  if (mc.image_patch > 0) {
    std::snprintf(buf, sizeof buf, "; image adapter: %lldx%lldx%lld patches, grid %lld",
                  static_cast<long long>(mc.image_patch), static_cast<long long>(mc.image_patch),
                  static_cast<long long>(mc.image_channels), static_cast<long long>(mc.image_grid_size()));
    s += buf;
  }
  if (mc.audio_stack > 0) {
    std::snprintf(buf, sizeof buf, "; audio adapter: %lld frames x %lld mels", static_cast<long long>(mc.audio_stack),
                  static_cast<long long>(mc.n_mels));
    s += buf;
  }
  return s;
}

// Parameters of the whole model (a rank holds only its shards of some).
int64_t logical_numel(const ParamStore& store) {
  int64_t n = 0;
  for (const Param& p : store.params()) n += p.shape.numel();
  return n;
}

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& out_dir) {
    if (!out_dir.empty()) file_.open(out_dir + "/metrics.jsonl", std::ios::app);
  }
  // fmt must produce a JSON object without its closing brace; extra members are appended.
  template <typename... KV>
  void write(const std::string& extra, const char* fmt, KV... kv) {
    if (!file_.is_open()) return;
    char line[512];
    std::snprintf(line, sizeof(line), fmt, kv...);
    file_ << line << (extra.empty() ? "" : ", ") << extra << "}\n";
    file_.flush();
  }

 private:
  std::ofstream file_;
};

}  // namespace

// H100 SXM dense bf16 tensor-core rate (datasheet): the MFU reference on GPUs.
constexpr double kH100PeakFlops = 989e12;

// The backend of --train.device (cuda: the GPU of this rank's local rank).
std::unique_ptr<Backend> make_backend(const TrainConfig& tc) {
  if (tc.device == "cpu") return make_cpu_backend(tc.threads);
#ifdef CASTOR_WITH_CUDA
  if (tc.threads > 0) kernels::cpu::set_num_threads(tc.threads);
  const DType act = tc.precision == "bf16" ? DType::bf16 : tc.precision == "f16" ? DType::f16 : DType::f32;
  return make_cuda_backend(cuda_device_for_local_rank(-1), act);
#else
  throw Error("--train.device cuda: this castor was built without CUDA (configure where nvcc is found)");
#endif
}

// What the cuda backend runs so far: text models (dense or MoE) under data parallelism
// (docs/gpu.md).
void check_cuda_scope(const TrainConfig& tc, const ModelConfig& mc, const LossConfig& loss, const ParallelConfig& par,
                      int world_size) {
  if (tc.device != "cuda") return;
#ifdef CASTOR_WITH_NCCL
  (void)world_size;
#else
  CASTOR_CHECK(world_size == 1, "--train.device cuda on ", world_size, " ranks needs NCCL, which this build lacks");
#endif
  CASTOR_CHECK(par.tp == 1 && par.ep == 1, "--train.device cuda: tensor and expert parallelism (--parallel.tp ",
               par.tp, ", --parallel.ep ", par.ep, ") run on the cpu backend only so far; use data parallelism");
  CASTOR_CHECK(!mc.multimodal(), "--train.device cuda: image and audio adapters run on the cpu backend only so far "
               "(docs/gpu.md)");
  CASTOR_CHECK(loss.distill == 0, "--train.device cuda: --loss.distill runs on the cpu backend only so far");
}

int train_command(const std::vector<std::string>& args) {
  TrainOptions opt;
  if (!parse_train_options(args, opt)) return 0;
  ModelConfig& mc = opt.model;
  const TrainConfig& tc = opt.train;
  opt.optim.validate();
  opt.parallel.validate();
  opt.loss.validate();

  // The process layout: validated before any work, with every degree in the message.
  parallel::MpiComm world(MPI_COMM_WORLD, "world", opt.parallel.timeout_s);
  const parallel::Mesh mesh({opt.parallel.tp, opt.parallel.dp, opt.parallel.pp, opt.parallel.ep}, world.size());
  CASTOR_CHECK(mesh.shape().pp == 1, "layout ", mesh.shape().str(), " on ", world.size(),
               " ranks: pipeline parallelism comes later; use --parallel.pp 1");
  parallel::ProcessGroups groups = parallel::ProcessGroups::build(mesh, world);
  const int dp = mesh.shape().dp;
  const bool lead = world.rank() == 0;
  if (!lead) std::freopen("/dev/null", "w", stdout);  // rank 0 logs; errors still go to stderr

  CASTOR_CHECK(!tc.train_data.empty(), "--data.train is required (a shard file or a directory of shards)");
  io::LoaderOptions lo = loader_options(tc, mc, groups.coord.dp, dp);
  io::Loader train_data(tc.train_data, lo);
  check_media_fit(mc, train_data, tc.train_data);
  if (mc.vocab_size == 0) mc.vocab_size = train_data.vocab_size();
  CASTOR_CHECK(mc.vocab_size >= train_data.vocab_size(), "--model.vocab_size (", mc.vocab_size,
               ") is smaller than the data's vocabulary (", train_data.vocab_size(), ", tokenizer ",
               train_data.tokenizer(), ")");
  mc.validate();
  tc.validate(mc);
  check_cuda_scope(tc, mc, opt.loss, opt.parallel, world.size());
  auto backend = make_backend(tc);
#ifdef CASTOR_WITH_NCCL
  if (backend->device() == Device::kCuda) {  // every collective over NCCL; MPI only set them up
    auto& cuda = static_cast<CudaBackend&>(*backend);
    groups = parallel::nccl_groups(groups, cuda.device_index(), cuda.compute_stream(), opt.parallel.timeout_s);
  }
#endif
  // mpirun binds each rank to one core by default: threads beyond the cores a rank may
  // use share them (half speed at 2 threads on 1 core, docs/config.md).
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) < kernels::cpu::num_threads())
    std::fprintf(stderr, "castor: warning: rank %d runs %d threads on %d core(s); under mpirun pass --bind-to none\n",
                 world.rank(), kernels::cpu::num_threads(), CPU_COUNT(&allowed));
  const int tp = mesh.shape().tp, ep = mesh.shape().ep;
  parallel::TensorParallel::check_layout(mc, tp, ep, opt.parallel.sequence_parallel, tc.micro_batch, tc.seq_len);
  CASTOR_CHECK(tp == 1 || opt.loss.distill == 0, "--loss.distill needs the whole model on each rank: use --parallel.tp 1");
  std::unique_ptr<io::Loader> val_data;
  if (!tc.val_data.empty()) {
    // The same windows at every evaluation (the cursor restarts in a seeded order), drawn from
    // every shard of the directory rather than the first ones in stream order.
    lo.dp_rank = 0;  // every rank evaluates the same windows: the value does not depend on dp
    lo.dp_size = 1;
    val_data = std::make_unique<io::Loader>(tc.val_data, lo);
    CASTOR_CHECK(val_data->tokenizer() == train_data.tokenizer(), "--data.val: tokenizer ", val_data->tokenizer(),
                 " differs from --data.train's ", train_data.tokenizer());
    check_media_fit(mc, *val_data, tc.val_data);
  }

  const int64_t B = tc.micro_batch, T = tc.seq_len;
  ParamStore store;
  // The model's layers, split over the tensor-parallel group and its experts over the
  // expert-parallel group when there are such groups.
  std::unique_ptr<nn::LayerBuilder> split;
  const parallel::SplitGroups split_groups{groups.tp.get(), groups.ep.get()};
  if (tp > 1 || ep > 1)
    split = std::make_unique<parallel::TensorParallel>(*groups.tp, opt.parallel.sequence_parallel, groups.ep.get());
  Transformer model(mc, store, *backend, B, T, split ? *split : nn::single_device());
  const parallel::ModelGroups model_groups = parallel::allocate_for_layout(store, *backend, groups);
  store.initialize(tc.seed);
  const size_t bucket_elems = std::max<size_t>(1, size_t(opt.parallel.bucket_mb * 1e6 / sizeof(float)));
  parallel::DataParallel sync(*groups.dp, store, *backend, opt.parallel.zero, bucket_elems, model_groups);
  // Checkpoints hold whole tensors: with sharded params they go through a logical copy.
  // On a GPU checkpoints go through a host copy of the state (the files are the same).
  const bool on_device = backend->device() != Device::kCpu;
  std::unique_ptr<Backend> host = on_device ? make_cpu_backend(0) : nullptr;
  auto load_state = [&](const std::string& path, const ArenaMoments* moments, io::TrainState* st) {
    if (on_device) {
      parallel::LogicalState whole(store, {}, mc.moe_experts, *host, moments != nullptr);
      const ArenaMoments wm = whole.moments();
      io::load_checkpoint(path, mc, whole.store, moments ? &wm : nullptr, st);
      parallel::copy_state(store, moments, *backend, whole, parallel::CopyTo::kLocal);
      return;
    }
    if (!split) {
      io::load_checkpoint(path, mc, store, moments, st);
      return;
    }
    parallel::LogicalState whole(store, split_groups, mc.moe_experts, *backend, moments != nullptr);
    const ArenaMoments wm = whole.moments();
    io::load_checkpoint(path, mc, whole.store, moments ? &wm : nullptr, st);
    parallel::scatter_logical(whole, store, moments);
  };
  AdamW optim = sync.make_optimizer(opt.optim);

  // Distillation: the teacher, any size with the same vocabulary, runs forward only.
  ParamStore teacher_store;
  std::unique_ptr<Transformer> teacher;
  if (opt.loss.distill > 0) {
    const ModelConfig tcfg = io::read_model_config(opt.loss.teacher);
    CASTOR_CHECK(tcfg.vocab_size == mc.vocab_size, opt.loss.teacher, ": teacher vocabulary ", tcfg.vocab_size,
                 " differs from the model's ", mc.vocab_size, " (distillation compares distributions over one vocabulary)");
    CASTOR_CHECK(tcfg.max_seq_len >= T, opt.loss.teacher, ": teacher max_seq_len ", tcfg.max_seq_len,
                 " is shorter than --train.seq_len ", T);
    teacher = std::make_unique<Transformer>(tcfg, teacher_store, *backend, B, T);
    teacher_store.allocate(*backend);
    io::load_checkpoint(opt.loss.teacher, tcfg, teacher_store, nullptr, nullptr);
    model.set_teacher(teacher.get());
    std::printf("teacher: %s (%s, %lld layers, d_model %lld, %.2fM params), temperature %g\n", opt.loss.teacher.c_str(),
                family_name(tcfg.family).c_str(), static_cast<long long>(tcfg.n_layers),
                static_cast<long long>(tcfg.d_model), double(teacher_store.numel()) / 1e6,
                double(opt.loss.distill_temperature));
  }
  if (!tc.init_from.empty()) {  // a new stage from a checkpoint's weights; optimizer and data start fresh
    load_state(tc.init_from, nullptr, nullptr);
    std::printf("initialised from %s\n", tc.init_from.c_str());
  }

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
        load_state(latest, &moments, &state);
      } else {  // whole moments from the file, then this rank's shard of them
        Buffer m(*backend, store.arena_elems() * sizeof(float)), v(*backend, store.arena_elems() * sizeof(float));
        const ArenaMoments moments{m.f32(), v.f32()};
        load_state(latest, &moments, &state);
        sync.scatter_moments(optim, moments);
      }
      optim.set_steps_taken(state.optim_steps);
      CASTOR_CHECK(state.seed == tc.seed, latest, ": checkpoint seed ", state.seed, " differs from --train.seed ",
                   tc.seed);
      train_data.set_cursor(state.cursor);
      std::printf("resumed from %s at step %lld\n", latest.c_str(), static_cast<long long>(state.step));
    }
  }

  const bool gpu = backend->device() == Device::kCuda;
  const double peak_flops = gpu ? kH100PeakFlops : measure_sgemm_peak();
  // Peak memory: the device's (backend allocations) on GPU, the process's resident set on CPU.
  auto peak_mem = [&] { return gpu ? double(backend->peak_bytes()) : double(peak_rss_bytes()); };
  const double flops_per_token = model_flops_per_token(mc, T);
  std::printf("model: %s, %lld layers, d_model %lld, heads %lld/%lld, vocab %lld, %.2fM params (%.2fM active "
              "non-embedding)%s\n",
              family_name(mc.family).c_str(), static_cast<long long>(mc.n_layers),
              static_cast<long long>(mc.d_model), static_cast<long long>(mc.n_heads),
              static_cast<long long>(mc.kv_heads()), static_cast<long long>(mc.vocab_size),
              double(logical_numel(store)) / 1e6, double(mc.non_embedding_params()) / 1e6, describe_model(mc).c_str());
  std::printf("data: %lld training positions (%lld sequences of %lld; %lld images, %lld audio clips), tokenizer %s; "
              "batch %lld x %lld x accum %lld x dp %d\n",
              static_cast<long long>(train_data.stream_positions()), static_cast<long long>(train_data.windows_per_epoch()),
              static_cast<long long>(T), static_cast<long long>(train_data.num_images()),
              static_cast<long long>(train_data.num_audio()), train_data.tokenizer().c_str(), static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(tc.grad_accum), dp);
  std::printf("layout: %s on %d ranks%s; %s\n", mesh.shape().str().c_str(), world.size(),
              tp > 1 && opt.parallel.sequence_parallel ? " (sequence parallel)" : "", sync.describe().c_str());
  const parallel::StateMemory mem = sync.memory(optim);
  constexpr double kMiB = 1024.0 * 1024.0;
  std::printf("state per rank: weights %.1f MiB, gradients %.1f MiB%s, AdamW moments %.1f MiB; total %.1f MiB\n",
              double(mem.weights) / kMiB, double(mem.grads) / kMiB,
              sync.stage() == 2 ? " (+ the buckets backward is writing)" : "", double(mem.moments) / kMiB,
              double(mem.total()) / kMiB);
  if (gpu) {
    std::printf("device: %s, %s activations; MFU against %.0f TFLOP/s (H100 SXM dense bf16, datasheet)\n",
                backend->name().c_str(), tc.precision.c_str(), peak_flops / 1e12);
  } else {
    std::printf("threads: %d, measured SGEMM peak %.1f GFLOP/s (MFU reference)\n", kernels::cpu::num_threads(),
                peak_flops / 1e9);
  }
  std::fflush(stdout);

  MetricsLog metrics(lead ? tc.out_dir : std::string());
  // Each micro-batch's objective is a mean over its items; a step averages its
  // accumulation x dp micro-batches.
  const float micro_scale = 1.0f / float(tc.grad_accum * dp);
  // f16: gradients of the loss times the scale, unscaled and checked before each update.
  LossScaler scaler(tc.precision == "f16", tc.loss_scale, tc.loss_scale_window);
  if (scaler.enabled() && state.loss_scale > 0) scaler.restore(float(state.loss_scale), state.loss_scale_clean);
  LossLog interval;  // since the last log line
  auto t_log = Clock::now();
  const auto t_start = Clock::now();
  int64_t tokens_since_log = 0, tokens_total = 0;
  double last_val = std::nan(""), last_loss = std::nan("");

  auto run_eval = [&](int64_t step) {
    if (!val_data) return;
    const LossLog val = evaluate(model, *val_data, opt.loss, tc.seed, tc.eval_batches);
    last_val = val.loss();
    std::printf("step %6lld | val loss %.6f%s\n", static_cast<long long>(step), last_val, val.terms_text().c_str());
    std::fflush(stdout);
    metrics.write(val.terms_text().empty() ? "" : "\"val\": {" + val.json() + "}", "{\"step\": %lld, \"val_loss\": %.6f",
                  static_cast<long long>(step), last_val);
  };
  auto save = [&](int64_t step) {
    if (tc.out_dir.empty()) return;
    const ArenaMoments moments = sync.gather_moments(optim);  // every rank joins under ZeRO
    std::optional<parallel::LogicalState> whole;
    if (on_device) {
      whole.emplace(store, parallel::SplitGroups{}, mc.moe_experts, *host, true);
      parallel::copy_state(store, &moments, *backend, *whole, parallel::CopyTo::kWhole);
    } else if (split) {  // and every tp rank in the gathering of the shards
      whole.emplace(store, split_groups, mc.moe_experts, *backend, true);
      parallel::gather_logical(split_groups, store, &moments, *whole);
    }
    if (!lead) return;  // every rank now holds the same whole state
    state.step = step;
    state.optim_steps = optim.steps_taken();
    state.cursor = train_data.cursor();
    state.loss_scale = scaler.enabled() ? scaler.scale() : 0.0;
    state.loss_scale_clean = scaler.clean_steps();
    const std::string path = io::checkpoint_path(tc.out_dir, step);
    if (whole) {
      const ArenaMoments wm = whole->moments();
      io::save_checkpoint(path, mc, whole->store, &wm, state);
    } else {
      io::save_checkpoint(path, mc, store, &moments, state);
    }
    std::printf("saved %s\n", path.c_str());
  };

  const int64_t first_step = state.step;
  io::Batch batch;  // reused: the loader refills its buffers
  for (int64_t step = first_step; step < tc.steps; ++step) {
    sync.zero_grads();
    LossLog step_log;
    for (int64_t micro = 0; micro < tc.grad_accum; ++micro) {
      train_data.next(batch);
      const float grad_scale = micro_scale * scaler.scale();
      step_log.add(model.forward(batch.view(), opt.loss, &grad_scale, tc.seed), model.moe_stats());
      sync.backward(model, micro + 1 == tc.grad_accum);  // reductions overlap backward
    }
    step_log.all_reduce(*groups.dp);
    const double loss = step_log.loss();
    CASTOR_CHECK(std::isfinite(loss), "training loss is not finite at step ", step + 1, " (", loss,
                 "); lower --optim.lr or check the data");
    // Under data parallelism the gradients are already summed over ranks, so every rank sees
    // the same overflow and skips the same steps.
    if (scaler.enabled()) {
      const bool finite = scaler.unscale(backend->ops(), store.grads(), int64_t(store.arena_elems()));
      scaler.update(finite);
      if (!finite) {
        std::printf("step %6lld | gradient overflow: update skipped, loss scale now %g\n",
                    static_cast<long long>(step + 1), double(scaler.scale()));
        continue;
      }
    }
    const double norm = sync.grad_norm(optim);
    const float lr = learning_rate(opt.optim, step, tc.steps);
    optim.step(lr, norm);
    sync.after_step();
    store.refresh_compute_weights();  // bf16 copies of the updated weights
    last_loss = loss;
    interval.add_log(step_log);
    tokens_since_log += B * T * tc.grad_accum * dp;
    tokens_total += B * T * tc.grad_accum * dp;

    const int64_t done = step + 1;
    if (done % tc.log_every == 0 || done == tc.steps) {
      const double dt = seconds_since(t_log);
      const double tps = double(tokens_since_log) / dt;
      const double mfu = tps / (dp * tp) * flops_per_token / peak_flops;  // per rank, against one rank's peak
      std::printf("step %6lld/%lld | loss %.6f%s | lr %.4e | grad norm %.4f | %.0f tok/s | MFU %.1f%%%s | peak mem "
                  "%.0f MiB\n",
                  static_cast<long long>(done), static_cast<long long>(tc.steps), loss, interval.terms_text().c_str(),
                  double(lr), norm, tps, 100.0 * mfu, interval.moe_text().c_str(),
                  peak_mem() / (1 << 20));
      std::fflush(stdout);
      metrics.write(interval.terms_text().empty() ? "" : "\"terms\": {" + interval.json() + "}",
                    "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, "
                    "\"mfu\": %.4f, \"peak_rss_bytes\": %lld",
                    static_cast<long long>(done), loss, double(lr), norm, tps, mfu,
                    static_cast<long long>(peak_mem()));
      t_log = Clock::now();
      tokens_since_log = 0;
      interval.reset();
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
              peak_mem() / (1 << 20));
  return 0;
}

}  // namespace castor::launch
