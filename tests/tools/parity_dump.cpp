// parity_dump: writes what tests/python/test_parity.py compares against PyTorch.
// Builds a small model of the given family, draws a fixed random batch, and writes to
// --out (an HDF5 checkpoint container): the initial weights (model/<name>), the batch
// (batch/ids, batch/targets as float), the gradients of the mean loss (grad/<name>), the
// optimizer settings, and the losses of --steps AdamW steps on that same batch (losses).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/optimizer.h"
#include "io/checkpoint.h"

using namespace castor;

namespace castor {
int multimodal_dump(const std::string& name, const std::string& out);  // multimodal_dump.cpp
}

int main(int argc, char** argv) {
  std::string family = "gpt2", out, multimodal;
  int64_t steps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--family") family = v;
    else if (k == "--out") out = v;
    else if (k == "--steps") steps = std::stoll(v);
    else if (k == "--multimodal") multimodal = v;
    else {
      std::fprintf(stderr, "parity_dump: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (out.empty()) {
    std::fprintf(stderr, "usage: parity_dump --family gpt2|llama --out FILE.h5 [--steps N]\n"
                         "       parity_dump --multimodal CASE --out FILE.h5\n");
    return 2;
  }
  if (!multimodal.empty()) {
    try {
      return multimodal_dump(multimodal, out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "parity_dump: error: %s\n", e.what());
      return 1;
    }
  }
  try {
    ModelConfig mc;
    mc.family = parse_family(family);
    mc.vocab_size = 97;
    mc.d_model = 48;
    mc.n_layers = 2;
    mc.n_heads = 4;
    mc.n_kv_heads = mc.family == Family::kLlama ? 2 : 0;
    mc.max_seq_len = 24;
    mc.init_std = 0.1f;  // larger than GPT-2's so gradients are far from zero
    OptimConfig oc;
    oc.lr = 1e-2f;
    oc.min_lr = 1e-3f;
    oc.warmup_steps = 2;
    oc.weight_decay = 0.1f;
    oc.grad_clip = 1.0f;
    const int64_t B = 3, T = 16;

    auto backend = make_cpu_backend(0);
    ParamStore store;
    Transformer model(mc, store, *backend, B, T);
    store.allocate(*backend);
    store.initialize(42);
    AdamW optim(oc, store, *backend);

    std::mt19937 gen(7);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(mc.vocab_size) - 1);
    std::vector<int32_t> ids(size_t(B * T)), targets(size_t(B * T));
    for (auto& x : ids) x = tok(gen);
    for (auto& x : targets) x = tok(gen);
    targets[5] = -1;  // one ignored position

    io::CheckpointWriter w(out);
    io::write_model_config(w, mc);
    w.write_double("optim.lr", oc.lr);
    w.write_double("optim.min_lr", oc.min_lr);
    w.write_int64("optim.warmup_steps", oc.warmup_steps);
    w.write_double("optim.weight_decay", oc.weight_decay);
    w.write_double("optim.beta1", oc.beta1);
    w.write_double("optim.beta2", oc.beta2);
    w.write_double("optim.eps", oc.eps);
    w.write_double("optim.grad_clip", oc.grad_clip);
    w.write_int64("train.steps", steps);
    std::vector<float> fids(ids.begin(), ids.end()), ftargets(targets.begin(), targets.end());
    w.write_tensor("batch/ids", {B, T}, fids.data());
    w.write_tensor("batch/targets", {B, T}, ftargets.data());
    for (const Param& p : store.params()) {
      w.write_tensor("model/" + p.name, p.shape.dims(), p.w);
      w.write_int64("decay/" + p.name, p.decay ? 1 : 0);
    }

    int64_t count = 0;
    for (int32_t t : targets) count += t >= 0;
    const float grad_scale = 1.0f / float(count);
    std::vector<float> losses;
    for (int64_t step = 0; step < steps; ++step) {
      store.zero_grads();
      auto r = model.forward(ids.data(), targets.data(), B, T, &grad_scale);
      model.backward();
      losses.push_back(float(r.loss_sum / double(r.count)));
      if (step == 0)
        for (const Param& p : store.params()) w.write_tensor("grad/" + p.name, p.shape.dims(), p.g);
      optim.step(learning_rate(oc, step, steps), optim.grad_norm());
    }
    w.write_tensor("losses", {steps}, losses.data());
    w.commit();
    for (float l : losses) std::printf("%.7f\n", double(l));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parity_dump: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
