// LossLog: the loss terms and expert loads of a stretch of training (or an evaluation),
// summed over micro-batches and data-parallel ranks, and formatted for the log line and
// metrics.jsonl. Each term is the mean of its per-micro-batch values over the micro-batches
// that had it; "loss" is the mean objective (sum of weight * term).
#pragma once
#include <array>
#include <string>
#include <vector>

#include "core/communicator.h"
#include "core/model.h"

namespace castor::launch {

class LossLog {
 public:
  void add(const LossValues& v, const std::vector<const nn::MoeStats*>& moe);
  void add_log(const LossLog& o);  // merges another stretch
  // Sums over the ranks of `comm` (every rank must call it), so every rank holds the job's view.
  void all_reduce(Communicator& comm);
  double loss() const { return micro_ > 0 ? total_ / micro_ : 0.0; }
  double term(LossTerm t) const;  // NaN when no micro-batch had it
  bool has(LossTerm t) const { return present_[size_t(t)] > 0; }
  double retrieval() const;       // contrastive pairs retrieving their own text (in-batch), or NaN
  // " | lm 3.21 | align 2.9 | ..." for every term present (nothing for a text-only dense run
  // whose only term is lm); " | expert share a..b c..d" with, per MoE layer, the smallest and
  // largest share of kept assignments an expert received, and the dropped share.
  std::string terms_text() const;
  std::string moe_text() const;
  // "\"lm\": 3.21, ..." JSON members (no braces), and per-layer expert shares.
  std::string json() const;
  void reset() { *this = LossLog(); }

 private:
  double micro_ = 0.0, total_ = 0.0, pairs_ = 0.0, pairs_correct_ = 0.0;
  std::array<double, kLossTerms> sum_{}, present_{};
  // Per MoE layer: sums of min and max share of kept assignments, assignments and drops.
  std::vector<double> min_share_, max_share_, assigned_, dropped_;
};

}  // namespace castor::launch
