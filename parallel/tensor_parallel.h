// Tensor and expert parallelism as a LayerBuilder: the model's code stays the single-device
// code and receives layers split over the tp group (Megatron-style) and MoE dispatchers that
// exchange tokens over the ep group (parallel/all_to_all_dispatcher.h). tp = 1: whole layers.
//   column-parallel linear: kEnter region, then this rank's output features;
//   row-parallel linear: this rank's input features, kExit region, then the bias;
//   vocabulary-parallel embedding table and LM head: this rank's rows of the vocabulary,
//   the head's softmax normalised with a max and a sum over ranks (no rank forms the full
//   logits).
// With sequence parallelism the norm and residual regions hold a contiguous block of the
// pass's B*T token rows per rank and all-gathers and reduce-scatters replace the all-reduces.
// MoE layers are not split by tp: each tp rank routes its block of the rows through them
// (router statistics summed over tp, so losses and capacity drops are the whole
// micro-batch's). Params computed from a block of rows (MoE layers; under SP the norms and
// row-parallel biases) are marked Param::token_split: their partial gradients are reduced
// over tp x dp with the data-parallel ones (parallel/data_parallel.h allocate_for_layout). The rest replicated over tp (positions, adapters, multimodal heads) runs on every
// row, so its gradients agree.
#pragma once
#include <memory>
#include <string>

#include "core/communicator.h"
#include "core/nn/layer_builder.h"

namespace castor::parallel {

class TensorParallel final : public nn::LayerBuilder {
 public:
  // tp: the tensor-parallel group. ep (may be nullptr or of size 1): the expert-parallel
  // group the MoE layers' dispatchers exchange tokens over.
  TensorParallel(Communicator& tp, bool sequence_parallel, Communicator* ep = nullptr);
  ~TensorParallel() override;

  int tp_size() const override { return tp_.size(); }
  int tp_rank() const override { return tp_.rank(); }
  bool sequence_parallel() const override { return sp_; }
  std::unique_ptr<nn::LinearLayer> column(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                          const std::vector<nn::Linear::Piece>& pieces, float init_std) override;
  std::unique_ptr<nn::LinearLayer> row(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                       const nn::Linear::Piece& piece, float init_std) override;
  std::unique_ptr<nn::Module> norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C, Family family,
                                   const std::string& prefix, float eps) override;
  std::unique_ptr<nn::Module> region(nn::Region kind, Backend& backend, int64_t max_rows, int64_t C) override;
  ParamShard vocab_shard() const override;
  std::unique_ptr<nn::VocabHead> vocab_head(Backend& backend, int64_t chunk_rows, int64_t C, int64_t V) override;
  std::unique_ptr<nn::TokenDispatcher> dispatcher(int64_t experts) override;
  nn::TokenGroup* token_group() override;
  std::unique_ptr<nn::Module> split_tokens(std::unique_ptr<nn::Module> layer, std::vector<Param*> params,
                                           Backend& backend, int64_t max_rows, int64_t C) override;

  // The checks a model config and batch must pass for this split, as one-line errors naming
  // the option: tp divides the heads, the key/value heads, d_ff and the vocabulary (under
  // sequence parallelism also the B*T rows of a micro-batch); ep divides the experts.
  static void check_layout(const ModelConfig& cfg, int tp, int ep, bool sequence_parallel, int64_t micro_batch,
                           int64_t seq_len);

 private:
  Communicator& tp_;
  bool sp_;
  Communicator* ep_;
  std::unique_ptr<nn::TokenGroup> token_group_;
};

}  // namespace castor::parallel
