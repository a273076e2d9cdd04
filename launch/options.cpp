// Boost.Program_options descriptions for `castor train`, INI + command-line merging
// (command line wins), and conversion into ModelConfig / OptimConfig / TrainConfig.
#include "launch/options.h"

#include <boost/program_options.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.h"

namespace po = boost::program_options;

namespace castor::launch {

std::string format_default(double v) {
  for (int precision = 1; precision <= 17; ++precision) {
    std::ostringstream os;
    os.precision(precision);
    os << v;
    if (std::stod(os.str()) == v || (float(std::stod(os.str())) == float(v))) return os.str();
  }
  return std::to_string(v);
}

void store_last_wins(const std::vector<std::string>& args, const po::options_description& desc,
                     po::variables_map& vm) {
  po::parsed_options parsed = po::command_line_parser(args).options(desc).run();
  std::vector<po::option> kept;
  for (size_t i = 0; i < parsed.options.size(); ++i) {
    const po::option_description* d = desc.find_nothrow(parsed.options[i].string_key, false);
    bool later = false;
    if (d && d->semantic()->max_tokens() > 1) later = false;  // list options accumulate
    else
    for (size_t j = i + 1; j < parsed.options.size() && !later; ++j)
      later = parsed.options[j].string_key == parsed.options[i].string_key;
    if (!later) kept.push_back(parsed.options[i]);
  }
  parsed.options = kept;
  po::store(parsed, vm);
}

bool parse_command_line(const std::vector<std::string>& args, const po::options_description& desc,
                        po::variables_map& vm) {
  try {
    store_last_wins(args, desc, vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    CASTOR_FAIL(e.what());
  }
  return true;
}

namespace {

template <typename T>
po::typed_value<T>* opt(T* field) {
  if constexpr (std::is_floating_point_v<T>) {
    return po::value<T>(field)->default_value(*field, format_default(*field));
  } else {
    return po::value<T>(field)->default_value(*field);
  }
}

}  // namespace

bool parse_train_options(const std::vector<std::string>& args, TrainOptions& out) {
  TrainOptions& o = out;
  std::string family = family_name(o.model.family);
  std::string config_file;

  po::options_description general("General");
  general.add_options()("help,h", "print this help and exit")(
      "config", po::value<std::string>(&config_file), "INI config file ([model], [optim], [train], [data] sections)");

  po::options_description model("Model [model]");
  model.add_options()("model.family", opt(&family), "gpt2 (LayerNorm, GELU, learned positions, tied head) or llama "
                                                    "(RMSNorm, SwiGLU, RoPE, untied head)")(
      "model.vocab_size", opt(&o.model.vocab_size), "vocabulary size; 0 = the data's tokenizer vocabulary")(
      "model.d_model", opt(&o.model.d_model), "model (residual) width")(
      "model.n_layers", opt(&o.model.n_layers), "transformer blocks")(
      "model.n_heads", opt(&o.model.n_heads), "attention query heads (must divide d_model)")(
      "model.n_kv_heads", opt(&o.model.n_kv_heads), "key/value heads for grouped-query attention; 0 = n_heads")(
      "model.d_ff", opt(&o.model.d_ff), "feed-forward width; 0 = 4*d_model (gpt2) or ~8/3*d_model (llama)")(
      "model.max_seq_len", opt(&o.model.max_seq_len), "maximum positions (learned position table size)")(
      "model.norm_eps", opt(&o.model.norm_eps), "LayerNorm/RMSNorm epsilon")(
      "model.rope_theta", opt(&o.model.rope_theta), "RoPE base (llama)")(
      "model.init_std", opt(&o.model.init_std), "initialisation std (residual projections scaled by 1/sqrt(2L))")(
      "model.moe_experts", opt(&o.model.moe_experts), "experts per MoE layer; 0 = dense feed-forward everywhere")(
      "model.moe_top_k", opt(&o.model.moe_top_k), "experts each token is routed to (1 <= k <= moe_experts)")(
      "model.moe_every", opt(&o.model.moe_every), "every k-th layer is MoE (layers k-1, 2k-1, ...); 1 = all")(
      "model.moe_d_ff", opt(&o.model.moe_d_ff), "expert hidden size; 0 = model.d_ff")(
      "model.moe_capacity", opt(&o.model.moe_capacity),
      "capacity factor: each expert keeps at most ceil(c * tokens * k / experts) tokens, the rest are dropped; 0 = dropless")(
      "model.moe_shared_expert", opt(&o.model.moe_shared_expert), "add a shared expert applied to every token (true/false)")(
      "model.image_patch", opt(&o.model.image_patch), "image patch side P (P x P pixels per position); 0 = no image adapter")(
      "model.image_channels", opt(&o.model.image_channels), "image channels (1 grey, 3 RGB)")(
      "model.image_grid", opt(&o.model.image_grid), "largest patch grid side (2-D position table); 0 = 16")(
      "model.audio_stack", opt(&o.model.audio_stack), "log-mel frames per audio position; 0 = no audio adapter")(
      "model.n_mels", opt(&o.model.n_mels), "log-mel bands per frame; 0 = the data's");

  po::options_description loss("Losses [loss] (docs/model.md)");
  loss.add_options()("loss.lm", opt(&o.loss.lm), "weight of next-token cross-entropy on text")(
      "loss.align", opt(&o.loss.align), "weight of cross-entropy on response tokens of prompt/response documents")(
      "loss.contrastive", opt(&o.loss.contrastive), "weight of InfoNCE between media and their captions/transcripts")(
      "loss.reconstruction", opt(&o.loss.reconstruction), "weight of MSE on masked image patches / audio frames")(
      "loss.balance", opt(&o.loss.balance), "weight of the MoE load-balancing loss")(
      "loss.router_z", opt(&o.loss.router_z), "weight of the MoE router z-loss")(
      "loss.distill", opt(&o.loss.distill), "weight of KL distillation from --loss.teacher")(
      "loss.temperature", opt(&o.loss.temperature), "InfoNCE temperature")(
      "loss.mask_ratio", opt(&o.loss.mask_ratio), "share of media positions masked for reconstruction")(
      "loss.distill_temperature", opt(&o.loss.distill_temperature), "distillation softmax temperature")(
      "loss.teacher", opt(&o.loss.teacher), "teacher checkpoint for distillation (same vocabulary, any size)");

  po::options_description optim("Optimizer [optim]");
  optim.add_options()("optim.lr", opt(&o.optim.lr), "peak learning rate")(
      "optim.min_lr", opt(&o.optim.min_lr), "final learning rate of the cosine decay")(
      "optim.warmup_steps", opt(&o.optim.warmup_steps), "linear warmup steps")(
      "optim.weight_decay", opt(&o.optim.weight_decay), "AdamW decoupled weight decay (matrices and embeddings)")(
      "optim.beta1", opt(&o.optim.beta1), "AdamW beta1")("optim.beta2", opt(&o.optim.beta2), "AdamW beta2")(
      "optim.eps", opt(&o.optim.eps), "AdamW epsilon")(
      "optim.grad_clip", opt(&o.optim.grad_clip), "clip the global gradient norm to this; 0 = off");

  po::options_description train("Training [train]");
  train.add_options()("train.steps", opt(&o.train.steps), "optimizer steps")(
      "train.micro_batch", opt(&o.train.micro_batch), "sequences per micro-batch")(
      "train.seq_len", opt(&o.train.seq_len), "tokens per sequence (<= model.max_seq_len)")(
      "train.grad_accum", opt(&o.train.grad_accum), "micro-batches accumulated per optimizer step")(
      "train.seed", opt(&o.train.seed), "seed for initialisation and data order")(
      "train.log_every", opt(&o.train.log_every), "print a log line every N steps")(
      "train.eval_every", opt(&o.train.eval_every), "validation loss every N steps; 0 = only at the end")(
      "train.eval_batches", opt(&o.train.eval_batches), "micro-batches per validation")(
      "train.ckpt_every", opt(&o.train.ckpt_every), "checkpoint every N steps; 0 = only at the end")(
      "train.threads", opt(&o.train.threads), "CPU threads (OpenMP + OpenBLAS); 0 = all cores")(
      "train.device", opt(&o.train.device), "cpu | cuda: where the model computes (cuda: one GPU per rank by local rank)")(
      "train.precision", opt(&o.train.precision),
      "f32 | bf16 | f16: activations and compute weights (bf16/f16 need cuda; master weights, moments, gradients "
      "stay f32; f16 uses dynamic loss scaling)")(
      "train.loss_scale", opt(&o.train.loss_scale), "f16: initial loss scale (halved on overflow, the step skipped)")(
      "train.loss_scale_window", opt(&o.train.loss_scale_window),
      "f16: clean steps in a row before the loss scale doubles")(
      "train.out_dir", opt(&o.train.out_dir), "run directory: checkpoints step_XXXXXXXX.h5, metrics.jsonl")(
      "train.init_from", opt(&o.train.init_from),
      "start from this checkpoint's weights (fine-tuning stage; optimizer and data start fresh)")(
      "train.resume", po::bool_switch(&o.train.resume), "resume from the latest complete checkpoint in out_dir")(
      "train.exit_after", opt(&o.train.exit_after),
      "save a checkpoint and exit after N steps of this invocation (for time-limited jobs); 0 = off");

  po::options_description data("Data [data]");
  data.add_options()("data.train", opt(&o.train.train_data), "training shards: a .h5 file or a directory of them")(
      "data.val", opt(&o.train.val_data), "validation shards (file or directory); empty = none");

  po::options_description parallel("Parallelism [parallel] (under mpirun / srun)");
  parallel.add_options()("parallel.tp", opt(&o.parallel.tp), "tensor-parallel degree (divides heads, d_ff and vocabulary)")(
      "parallel.sequence_parallel", opt(&o.parallel.sequence_parallel),
      "sequence parallelism: norms and residuals split over tp by token rows (true/false)")(
      "parallel.dp", opt(&o.parallel.dp), "data-parallel degree; 0 = world size / (tp * pp)")(
      "parallel.pp", opt(&o.parallel.pp), "pipeline-parallel degree (1 in this version)")(
      "parallel.ep", opt(&o.parallel.ep), "expert-parallel degree (divides dp and --model.moe_experts)")(
      "parallel.zero", opt(&o.parallel.zero), "ZeRO stage: 0 replicated optimizer states, 1 moments sharded over dp, 2 gradients sharded too")(
      "parallel.bucket_mb", opt(&o.parallel.bucket_mb), "gradient all-reduce bucket size (MB)")(
      "parallel.timeout", opt(&o.parallel.timeout_s), "seconds a collective may wait before the job aborts");

  po::options_description all("castor train: train a decoder-only transformer on HDF5 token shards.\n"
                              "Usage: castor train [--config FILE.ini] [--section.key VALUE ...]\n"
                              "Command-line values override the config file");
  all.add(general).add(model).add(loss).add(optim).add(train).add(data).add(parallel);

  po::variables_map vm;
  try {
    store_last_wins(args, all, vm);
    if (vm.count("help")) {
      std::cout << all << "\n";
      return false;
    }
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream in(path);
      CASTOR_CHECK(in.good(), "--config: cannot open ", path);
      try {
        po::store(po::parse_config_file(in, all, false), vm);
      } catch (const po::error& e) {
        CASTOR_FAIL(path, ": ", e.what());
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    CASTOR_FAIL(e.what());
  }
  o.model.family = parse_family(family);
  return true;
}

}  // namespace castor::launch
