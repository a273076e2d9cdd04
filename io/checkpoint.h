// Training checkpoints: the model (every Param under its logical name and shape), AdamW
// moments, step, loader cursor, seed and the model config, mapped onto the layout-free
// HDF5 container of io/checkpoint_file.h. Files are step_XXXXXXXX.h5 in the run directory,
// written under a temporary name and renamed when complete.
#pragma once
#include <cstdint>
#include <string>

#include "core/config.h"
#include "core/optimizer.h"
#include "core/param.h"
#include "io/checkpoint_file.h"  // checkpoint_path, latest_checkpoint
#include "io/loader.h"  // LoaderCursor

namespace castor::io {

struct TrainState {
  int64_t step = 0;  // training steps completed
  int64_t optim_steps = 0;  // AdamW steps taken (bias correction)
  uint64_t seed = 0;
  LoaderCursor cursor;
  // fp16 dynamic loss scaling (core/loss_scale.h): the scale and the clean steps since it
  // last changed; loss_scale 0: the run does not scale its loss (nothing stored).
  double loss_scale = 0.0;
  int64_t loss_scale_clean = 0;
};

// The model config as scalars ("model.family", "model.d_model", ...); read_model_config
// reads them back.
void write_model_config(CheckpointWriter& w, const ModelConfig& model);

// moments (whole-arena layout), when given, are stored as optim/exp_avg/<name> and
// optim/exp_avg_sq/<name>, whatever sharding produced them.
void save_checkpoint(const std::string& path, const ModelConfig& model, const ParamStore& store,
                     const ArenaMoments* moments, const TrainState& state);

// The model config stored in a checkpoint (to rebuild the model before loading).
ModelConfig read_model_config(const std::string& path);

// Loads weights (and moments, whole-arena layout, and state when given). The checkpoint's
// model config must equal `model`; a mismatch names the field and both values.
void load_checkpoint(const std::string& path, const ModelConfig& model, ParamStore& store,
                     const ArenaMoments* moments, TrainState* state);

}  // namespace castor::io
