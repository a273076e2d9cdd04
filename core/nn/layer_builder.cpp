// The single-device LayerBuilder: whole Linear and Norm layers, identity regions, the fused
// LM head kernel over the whole vocabulary, the local token dispatcher.
#include "core/nn/layer_builder.h"

#include "core/nn/norm.h"

namespace castor::nn {

namespace kc = kernels::cpu;

namespace {

class Identity final : public Module {
 public:
  Tensor forward(const Pass&, Tensor x) override { return x; }
  Tensor backward(const Pass&, Tensor dy) override { return dy; }
};

class WholeVocabHead final : public VocabHead {
 public:
  WholeVocabHead(Backend& backend, int64_t chunk_rows, int64_t C, int64_t V)
      : ops_(backend.ops()), chunk_(chunk_rows), C_(C), V_(V) {}
  kc::XentResult xent(Ref h, Ref w, const int32_t* targets, int64_t N, Ref dh, float* dw, const float* row_scale,
                      double* row_losses) override {
    return ops_.lm_head_xent(h, w, targets, N, C_, V_, 1.0f, dh, dw, chunk_, row_scale, row_losses);
  }

 private:
  Ops& ops_;
  int64_t chunk_, C_, V_;
};

}  // namespace

std::unique_ptr<LinearLayer> LayerBuilder::column(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                                  const std::vector<Linear::Piece>& pieces, float init_std) {
  return std::make_unique<Linear>(store, backend, max_rows, in, pieces, init_std);
}

std::unique_ptr<LinearLayer> LayerBuilder::row(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                               const Linear::Piece& piece, float init_std) {
  return std::make_unique<Linear>(store, backend, max_rows, in, std::vector<Linear::Piece>{piece}, init_std);
}

std::unique_ptr<Module> LayerBuilder::norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C,
                                           Family family, const std::string& prefix, float eps) {
  return std::make_unique<Norm>(store, backend, max_rows, C, family, prefix, eps);
}

std::unique_ptr<Module> LayerBuilder::region(Region, Backend&, int64_t, int64_t) {
  return std::make_unique<Identity>();
}

std::unique_ptr<VocabHead> LayerBuilder::vocab_head(Backend& backend, int64_t chunk_rows, int64_t C, int64_t V) {
  return std::make_unique<WholeVocabHead>(backend, chunk_rows, C, V);
}

std::unique_ptr<TokenDispatcher> LayerBuilder::dispatcher(int64_t experts) {
  return std::make_unique<LocalDispatcher>(experts);
}

std::unique_ptr<Module> LayerBuilder::split_tokens(std::unique_ptr<Module> layer, std::vector<Param*>, Backend&,
                                                   int64_t, int64_t) {
  return layer;
}

LayerBuilder& single_device() {
  static LayerBuilder builder;  // stateless
  return builder;
}

}  // namespace castor::nn
