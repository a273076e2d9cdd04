// LayerBuilder: how the model's layers are split over the tensor-parallel group, injected
// into the model (DESIGN principle 1: the model code reads the same at tp = 1 and tp = 8).
// The model asks it for linear layers (column- or row-parallel), norms, the communication
// regions at the edges of split work, its vocabulary slice, the LM head and the MoE token
// dispatcher. This base class is the single-device builder: whole layers, identity regions.
// parallel/tensor_parallel.h builds tp > 1 (with optional sequence parallelism).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/nn/linear.h"
#include "core/nn/token_dispatcher.h"
#include "core/nn/token_group.h"
#include "kernels/cpu/lm_head_xent.h"

namespace castor::nn {

// Communication at the edge of tensor-parallel work (Megatron's mappings). "Rows" are the
// B*T token rows of a pass; under sequence parallelism a rank holds a contiguous block of
// them in the norm and residual regions (LayerBuilder::local_rows).
enum class Region {
  kEnter,    // before a column-parallel layer. Forward: identity (SP: all-gather rows).
             // Backward: all-reduce (SP: reduce-scatter rows).
  kExit,     // after a row-parallel layer. Forward: all-reduce (SP: reduce-scatter rows).
             // Backward: identity (SP: all-gather rows).
  kReduce,   // forward all-reduce, backward identity (partial vocabulary embeddings).
  kScatter,  // from work on every row to the residual's rows. SP: forward this rank's rows,
             // backward all-gather.
};

// The LM head fused with cross-entropy over the vocabulary slice this rank holds (w: the
// slice's rows). Same contract as kernels::cpu::lm_head_xent with grad_scale 1: h (N, C) is
// every row; dh (=) gets this rank's part of the hidden-state gradient (summed over ranks by
// the kEnter region's backward), dw (+=) its slice's gradient.
class VocabHead {
 public:
  virtual ~VocabHead() = default;
  virtual kernels::cpu::XentResult xent(Ref h, Ref w, const int32_t* targets, int64_t N, Ref dh, float* dw,
                                        const float* row_scale, double* row_losses) = 0;
};

class LayerBuilder {
 public:
  virtual ~LayerBuilder() = default;
  virtual int tp_size() const { return 1; }
  virtual int tp_rank() const { return 0; }
  virtual bool sequence_parallel() const { return false; }
  // Rows this rank holds in the norm/residual regions of a pass of `rows` rows, and the
  // first of them.
  int64_t local_rows(int64_t rows) const { return sequence_parallel() ? rows / tp_size() : rows; }
  int64_t first_local_row(int64_t rows) const { return sequence_parallel() ? tp_rank() * local_rows(rows) : 0; }

  // Output features split over tp (each piece by its segments), input whole.
  virtual std::unique_ptr<LinearLayer> column(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                              const std::vector<Linear::Piece>& pieces, float init_std);
  // Input features split over tp, output whole (summed over ranks; the bias added after).
  virtual std::unique_ptr<LinearLayer> row(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                           const Linear::Piece& piece, float init_std);
  // A norm over this rank's rows (its weight gradients summed over tp under SP).
  virtual std::unique_ptr<Module> norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C,
                                       Family family, const std::string& prefix, float eps);
  virtual std::unique_ptr<Module> region(Region kind, Backend& backend, int64_t max_rows, int64_t C);
  // The slice of a (V, C) vocabulary table this rank holds.
  virtual ParamShard vocab_shard() const { return {}; }
  // chunk_rows: rows per chunk of the fused head (Transformer::head_chunk_rows).
  virtual std::unique_ptr<VocabHead> vocab_head(Backend& backend, int64_t chunk_rows, int64_t C, int64_t V);
  virtual std::unique_ptr<TokenDispatcher> dispatcher(int64_t experts);
  // MoE layers: each tp rank routes one block of the pass's rows. token_group() is the
  // group the Moe sums its router statistics over; split_tokens wraps the layer (whose
  // params are `params`, replicated over tp) so that it takes and returns the residual's
  // rows and runs on this rank's block; its params' gradients, then partial, are marked
  // Param::token_split for the gradient reduction to sum over the group too.
  virtual TokenGroup* token_group() { return nullptr; }
  virtual std::unique_ptr<Module> split_tokens(std::unique_ptr<Module> layer, std::vector<Param*> params,
                                               Backend& backend, int64_t max_rows, int64_t C);
};

// The builder of a single-device model.
LayerBuilder& single_device();

}  // namespace castor::nn
