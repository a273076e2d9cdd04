// LossLog: accumulation, one all-reduce of a flat array, and formatting.
#include "launch/loss_log.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace castor::launch {

void LossLog::add(const LossValues& v, const std::vector<const nn::MoeStats*>& moe) {
  micro_ += 1.0;
  total_ += v.total;
  for (int t = 0; t < kLossTerms; ++t) {
    if (v.items[size_t(t)] == 0) continue;
    sum_[size_t(t)] += v.value[size_t(t)];
    present_[size_t(t)] += 1.0;
  }
  pairs_ += double(v.count(LossTerm::contrastive));
  pairs_correct_ += double(v.pairs_correct);
  if (min_share_.size() != moe.size()) {
    min_share_.assign(moe.size(), 0.0);
    max_share_.assign(moe.size(), 0.0);
    assigned_.assign(moe.size(), 0.0);
    dropped_.assign(moe.size(), 0.0);
  }
  for (size_t l = 0; l < moe.size(); ++l) {
    const nn::MoeStats& s = *moe[l];
    const double kept = double(std::max<int64_t>(s.assignments - s.dropped, 1));
    min_share_[l] += double(s.min_load) / kept;
    max_share_[l] += double(s.max_load) / kept;
    assigned_[l] += double(s.assignments);
    dropped_[l] += double(s.dropped);
  }
}

void LossLog::add_log(const LossLog& o) {
  micro_ += o.micro_;
  total_ += o.total_;
  pairs_ += o.pairs_;
  pairs_correct_ += o.pairs_correct_;
  for (int t = 0; t < kLossTerms; ++t) {
    sum_[size_t(t)] += o.sum_[size_t(t)];
    present_[size_t(t)] += o.present_[size_t(t)];
  }
  if (min_share_.empty()) {
    min_share_ = o.min_share_;
    max_share_ = o.max_share_;
    assigned_ = o.assigned_;
    dropped_ = o.dropped_;
    return;
  }
  for (size_t l = 0; l < min_share_.size() && l < o.min_share_.size(); ++l) {
    min_share_[l] += o.min_share_[l];
    max_share_[l] += o.max_share_[l];
    assigned_[l] += o.assigned_[l];
    dropped_[l] += o.dropped_[l];
  }
}

void LossLog::all_reduce(Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<double> flat{micro_, total_, pairs_, pairs_correct_};
  flat.insert(flat.end(), sum_.begin(), sum_.end());
  flat.insert(flat.end(), present_.begin(), present_.end());
  for (const auto* v : {&min_share_, &max_share_, &assigned_, &dropped_}) flat.insert(flat.end(), v->begin(), v->end());
  comm.all_reduce(flat.data(), flat.size(), ReduceOp::kSum);
  size_t i = 0;
  micro_ = flat[i++];
  total_ = flat[i++];
  pairs_ = flat[i++];
  pairs_correct_ = flat[i++];
  for (double& x : sum_) x = flat[i++];
  for (double& x : present_) x = flat[i++];
  for (auto* v : {&min_share_, &max_share_, &assigned_, &dropped_})
    for (double& x : *v) x = flat[i++];
}

double LossLog::term(LossTerm t) const {
  return present_[size_t(t)] > 0 ? sum_[size_t(t)] / present_[size_t(t)] : std::nan("");
}

double LossLog::retrieval() const { return pairs_ > 0 ? pairs_correct_ / pairs_ : std::nan(""); }

std::string LossLog::terms_text() const {
  int present = 0;
  for (double p : present_) present += p > 0;
  if (present <= 1 && has(LossTerm::lm)) return "";  // a text-only dense run: the loss is the lm term
  std::string out;
  char buf[64];
  for (int t = 0; t < kLossTerms; ++t) {
    if (!has(LossTerm(t))) continue;
    std::snprintf(buf, sizeof buf, " | %s %.4f", loss_term_name(LossTerm(t)), term(LossTerm(t)));
    out += buf;
  }
  return out;
}

std::string LossLog::moe_text() const {
  if (min_share_.empty() || micro_ == 0) return "";
  std::string out = " | expert share";
  char buf[64];
  double assigned = 0.0, dropped = 0.0;
  for (size_t l = 0; l < min_share_.size(); ++l) {
    std::snprintf(buf, sizeof buf, " %.3f..%.3f", min_share_[l] / micro_, max_share_[l] / micro_);
    out += buf;
    assigned += assigned_[l];
    dropped += dropped_[l];
  }
  if (dropped > 0) {
    std::snprintf(buf, sizeof buf, " (%.1f%% dropped)", 100.0 * dropped / assigned);
    out += buf;
  }
  return out;
}

std::string LossLog::json() const {
  std::string out;
  char buf[96];
  for (int t = 0; t < kLossTerms; ++t) {
    if (!has(LossTerm(t))) continue;
    std::snprintf(buf, sizeof buf, "%s\"%s\": %.6f", out.empty() ? "" : ", ", loss_term_name(LossTerm(t)),
                  term(LossTerm(t)));
    out += buf;
  }
  if (pairs_ > 0) {
    std::snprintf(buf, sizeof buf, ", \"pair_top1\": %.4f", retrieval());
    out += buf;
  }
  if (!min_share_.empty() && micro_ > 0) {
    std::string lo = "[", hi = "[";
    for (size_t l = 0; l < min_share_.size(); ++l) {
      std::snprintf(buf, sizeof buf, "%s%.4f", l ? ", " : "", min_share_[l] / micro_);
      lo += buf;
      std::snprintf(buf, sizeof buf, "%s%.4f", l ? ", " : "", max_share_[l] / micro_);
      hi += buf;
    }
    out += ", \"expert_min_share\": " + lo + "], \"expert_max_share\": " + hi + "]";
  }
  return out;
}

}  // namespace castor::launch
