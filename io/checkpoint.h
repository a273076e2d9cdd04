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
  int64_t step = 0;  // optimizer steps completed
  uint64_t seed = 0;
  LoaderCursor cursor;
};

// The model config as scalars ("model.family", "model.d_model", ...); read_model_config
// reads them back.
void write_model_config(CheckpointWriter& w, const ModelConfig& model);

void save_checkpoint(const std::string& path, const ModelConfig& model, const ParamStore& store,
                     const AdamW* optim, const TrainState& state);

// The model config stored in a checkpoint (to rebuild the model before loading).
ModelConfig read_model_config(const std::string& path);

// Loads weights (and moments and state when optim/state are given). The checkpoint's
// model config must equal `model`; a mismatch names the field and both values.
void load_checkpoint(const std::string& path, const ModelConfig& model, ParamStore& store, AdamW* optim,
                     TrainState* state);

}  // namespace castor::io
