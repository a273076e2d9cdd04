// ModelInputData::view: the non-owning ModelInput over the owned arrays.
#include "core/model_input.h"

namespace castor {

namespace {
template <typename T>
const T* or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}
}  // namespace

ModelInput ModelInputData::view() const {
  ModelInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  in.targets = or_null(targets);
  in.modality = or_null(modality);
  in.align = or_null(align);
  in.segment_begin = or_null(segment_begin);
  in.sample = or_null(sample);
  in.n_patches = int64_t(patch_pos.size());
  in.patches = patches.data();
  in.patch_pos = patch_pos.data();
  in.patch_grid = patch_grid.data();
  in.n_frames = int64_t(frame_pos.size());
  in.frames = frames.data();
  in.frame_pos = frame_pos.data();
  in.pairs = pairs;
  return in;
}

}  // namespace castor
