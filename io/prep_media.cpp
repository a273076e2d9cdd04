// prep images, audio and mix: decode PNG / IDX images and WAV audio, fit images to the
// configured size, resample audio to the feature rate and compute log-mel features, pair
// each image/clip with its caption/transcript, and write documents in input order.
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/image.h"
#include "io/json_lite.h"
#include "io/prep.h"

namespace castor::io {
namespace {

namespace fs = std::filesystem;

struct ManifestEntry {
  std::string path, text;
  int64_t line = 0;
};

// "<path>\t<text>" lines; paths relative to the manifest's directory; blank lines skipped.
std::vector<ManifestEntry> read_tsv_manifest(const std::string& manifest) {
  std::ifstream in(manifest, std::ios::binary);
  CASTOR_CHECK(in.good(), manifest, ": cannot open manifest");
  const fs::path dir = fs::path(manifest).parent_path();
  std::vector<ManifestEntry> out;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const size_t tab = line.find('\t');
    CASTOR_CHECK(tab != std::string::npos && tab > 0, manifest, ":", n,
                 ": expected \"<file>\\t<text>\" (a path, a tab, then the caption or transcript)");
    ManifestEntry e;
    e.path = (dir / line.substr(0, tab)).string();
    e.text = line.substr(tab + 1);
    e.line = n;
    out.push_back(std::move(e));
  }
  CASTOR_CHECK(!out.empty(), manifest, ": manifest lists no files");
  return out;
}

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : int64_t(n);
}

SegmentData image_segment(Image img, int64_t size, int64_t channels) {
  SegmentData s;
  s.kind = SegmentKind::image;
  s.image = fit_image(img, size, channels);
  return s;
}

SegmentData audio_segment(const std::string& path, const LogMel& mel) {
  const AudioClip clip = read_wav(path);
  const int64_t rate = mel.config().sample_rate;
  const std::vector<float> samples = clip.sample_rate == rate ? clip.samples : resample(clip.samples, clip.sample_rate, rate);
  CASTOR_CHECK(!samples.empty(), path, ": no samples after resampling to ", rate, " Hz");
  SegmentData s;
  s.kind = SegmentKind::audio;
  s.audio.num_samples = int64_t(samples.size());
  s.audio.data = mel.compute(samples, &s.audio.frames);
  return s;
}

// A media segment followed by the text it is paired with.
DocumentData paired_document(SegmentData media, SegmentData text, int32_t source, Split split) {
  DocumentData d;
  media.pair = 1;
  d.segments.push_back(std::move(media));
  d.segments.push_back(std::move(text));
  d.source = source;
  d.split = split;
  return d;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CASTOR_CHECK(in.good(), path, ": cannot open file");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::string fill_template(const std::string& tmpl, const std::string& name) {
  std::string out = tmpl;
  const size_t at = out.find("{}");
  if (at != std::string::npos) out.replace(at, 2, name);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------- images

void PrepImagesConfig::validate() const {
  out.validate();
  const bool idx = !idx_images.empty(), png = !manifest.empty();
  CASTOR_CHECK(idx != png, "prep images: give either --idx-images (with --idx-labels and --class-names) or "
                           "--manifest (PNG files with captions)");
  if (idx) {
    CASTOR_CHECK(!idx_labels.empty(), "--idx-labels is required with --idx-images");
    CASTOR_CHECK(!class_names.empty(), "--class-names is required with --idx-images");
  }
  CASTOR_CHECK(size >= 1 && size <= 4096, "--size must be in [1, 4096] (got ", size, ")");
  CASTOR_CHECK(channels == 1 || channels == 3, "--channels must be 1 or 3 (got ", channels, ")");
  CASTOR_CHECK(limit >= 0, "--limit must be >= 0 (got ", limit, ")");
}

PrepStats prep_images(const PrepImagesConfig& cfg) {
  cfg.validate();
  auto tok = prep_tokenizer(cfg.tokenizer, cfg.data_dir);
  const Split split = parse_split(cfg.out.split);
  if (!cfg.idx_images.empty()) {
    const std::vector<Image> images = read_idx_images(cfg.idx_images);
    const std::vector<uint8_t> labels = read_idx_labels(cfg.idx_labels);
    const std::vector<std::string> names = read_lines(cfg.class_names);
    CASTOR_CHECK(labels.size() == images.size(), cfg.idx_labels, ": ", labels.size(), " labels for ", images.size(),
                 " images in ", cfg.idx_images);
    for (size_t i = 0; i < labels.size(); ++i)
      CASTOR_CHECK(labels[i] < names.size(), cfg.idx_labels, ": label ", int(labels[i]), " of image ", i,
                   " has no name in ", cfg.class_names, " (", names.size(), " classes)");
    const int64_t n = cfg.limit > 0 ? std::min<int64_t>(cfg.limit, int64_t(images.size())) : int64_t(images.size());
    const int64_t bytes_each = (file_bytes(cfg.idx_images) + file_bytes(cfg.idx_labels)) / std::max<int64_t>(1, int64_t(images.size()));
    ShardSink sink(cfg.out, "images", *tok, {cfg.idx_images, cfg.idx_labels});
    parallel_ordered(
        n,
        [&](int64_t i) {
          const std::string caption = fill_template(cfg.caption_template, names[labels[size_t(i)]]);
          return paired_document(image_segment(images[size_t(i)], cfg.size, cfg.channels),
                                 text_segment(*tok, caption), 0, split);
        },
        [&](int64_t, DocumentData&& d) { sink.add(d, bytes_each); });
    return sink.finish();
  }
  std::vector<ManifestEntry> entries = read_tsv_manifest(cfg.manifest);
  if (cfg.limit > 0 && int64_t(entries.size()) > cfg.limit) entries.resize(size_t(cfg.limit));
  ShardSink sink(cfg.out, "images", *tok, {cfg.manifest});
  parallel_ordered(
      int64_t(entries.size()),
      [&](int64_t i) {
        const ManifestEntry& e = entries[size_t(i)];
        try {
          return paired_document(image_segment(read_png(e.path), cfg.size, cfg.channels), text_segment(*tok, e.text),
                                 0, split);
        } catch (const Error& err) {
          CASTOR_FAIL(cfg.manifest, ":", e.line, ": ", err.what());
        }
      },
      [&](int64_t i, DocumentData&& d) { sink.add(d, file_bytes(entries[size_t(i)].path)); });
  return sink.finish();
}

// ---------------------------------------------------------------------------- audio

void PrepAudioConfig::validate() const {
  out.validate();
  CASTOR_CHECK(!manifest.empty(), "--manifest is required (lines \"<wav path>\\t<transcript>\")");
  mel.validate();
  CASTOR_CHECK(limit >= 0, "--limit must be >= 0 (got ", limit, ")");
}

PrepStats prep_audio(const PrepAudioConfig& cfg) {
  cfg.validate();
  auto tok = prep_tokenizer(cfg.tokenizer, cfg.data_dir);
  const Split split = parse_split(cfg.out.split);
  std::vector<ManifestEntry> entries = read_tsv_manifest(cfg.manifest);
  if (cfg.limit > 0 && int64_t(entries.size()) > cfg.limit) entries.resize(size_t(cfg.limit));
  const LogMel mel(cfg.mel);
  ShardSink sink(cfg.out, "audio", *tok, {cfg.manifest}, cfg.mel, cfg.f16);
  parallel_ordered(
      int64_t(entries.size()),
      [&](int64_t i) {
        const ManifestEntry& e = entries[size_t(i)];
        try {
          return paired_document(audio_segment(e.path, mel), text_segment(*tok, e.text), 0, split);
        } catch (const Error& err) {
          CASTOR_FAIL(cfg.manifest, ":", e.line, ": ", err.what());
        }
      },
      [&](int64_t i, DocumentData&& d) { sink.add(d, file_bytes(entries[size_t(i)].path)); });
  return sink.finish();
}

// ---------------------------------------------------------------------------- mix

void PrepMixConfig::validate() const {
  out.validate();
  CASTOR_CHECK(!inputs.empty(), "--input: at least one JSON lines manifest is required");
  for (const auto& in : inputs) CASTOR_CHECK(fs::is_regular_file(in), in, ": no such input file");
  CASTOR_CHECK(image_size >= 1 && image_size <= 4096, "--size must be in [1, 4096] (got ", image_size, ")");
  CASTOR_CHECK(channels == 1 || channels == 3, "--channels must be 1 or 3 (got ", channels, ")");
  mel.validate();
}

namespace {

// One manifest line: {"segments": [...], "split": "..."} or a bare array of entries
// {"text": s, "loss": bool} | {"image": path, "pair": k} | {"audio": path, "pair": k}.
DocumentData mix_document(const std::string& line, const std::string& where, const fs::path& dir,
                          const PrepMixConfig& cfg, const Tokenizer& tok, const LogMel& mel, Split default_split,
                          int32_t source, int64_t* bytes) {
  const JsonValue v = parse_json(line, where);
  const JsonValue* segs = &v;
  DocumentData d;
  d.source = source;
  d.split = default_split;
  if (v.type == JsonValue::Type::object) {
    segs = v.find("segments");
    CASTOR_CHECK(segs != nullptr, where, ": a document object needs a \"segments\" array");
    if (const JsonValue* s = v.find("split")) {
      CASTOR_CHECK(s->type == JsonValue::Type::string, where, ": \"split\" must be a string");
      try {
        d.split = parse_split(s->str);
      } catch (const Error& e) {
        CASTOR_FAIL(where, ": ", e.what());
      }
    }
  }
  CASTOR_CHECK(segs->type == JsonValue::Type::array && !segs->items.empty(), where,
               ": expected a non-empty array of segments");
  for (size_t k = 0; k < segs->items.size(); ++k) {
    const JsonValue& e = segs->items[k];
    const std::string at = cat(where, ": segment ", k);
    CASTOR_CHECK(e.type == JsonValue::Type::object, at, ": expected an object like {\"text\": ...}");
    const JsonValue* text = e.find("text");
    const JsonValue* image = e.find("image");
    const JsonValue* audio = e.find("audio");
    CASTOR_CHECK((text != nullptr) + (image != nullptr) + (audio != nullptr) == 1, at,
                 ": needs exactly one of \"text\", \"image\", \"audio\"");
    const JsonValue* value = text ? text : image ? image : audio;
    CASTOR_CHECK(value->type == JsonValue::Type::string, at, ": the value must be a string");
    for (const auto& [key, unused] : e.members) {
      const bool known = key == "text" || key == "image" || key == "audio" || (text && key == "loss") ||
                         (!text && key == "pair");
      CASTOR_CHECK(known, at, ": unexpected key \"", key, "\" (text takes \"loss\", image and audio take \"pair\")");
    }
    if (text) {
      uint8_t flags = 0;
      if (const JsonValue* loss = e.find("loss")) {
        CASTOR_CHECK(loss->type == JsonValue::Type::boolean, at, ": \"loss\" must be true or false");
        if (!loss->b) flags |= kSegmentNoLoss;
      }
      d.segments.push_back(text_segment(tok, value->str, flags));
      continue;
    }
    const std::string path = (dir / value->str).string();
    CASTOR_CHECK(fs::is_regular_file(path), at, ": ", path, ": no such file");
    *bytes += file_bytes(path);
    try {
      d.segments.push_back(image ? image_segment(read_png(path), cfg.image_size, cfg.channels)
                                 : audio_segment(path, mel));
    } catch (const Error& err) {
      CASTOR_FAIL(at, ": ", err.what());
    }
    if (const JsonValue* pair = e.find("pair")) {
      CASTOR_CHECK(pair->type == JsonValue::Type::number && pair->num >= 0 && pair->num < double(segs->items.size()) &&
                       pair->num == double(int64_t(pair->num)),
                   at, ": \"pair\" must be the index of a segment of this document");
      const JsonValue& target = segs->items[size_t(pair->num)];
      CASTOR_CHECK(target.type == JsonValue::Type::object && target.find("text") != nullptr, at, ": \"pair\" ",
                   int64_t(pair->num), " is not a text segment");
      d.segments.back().pair = int64_t(pair->num);
    }
  }
  return d;
}

}  // namespace

PrepStats prep_mix(const PrepMixConfig& cfg) {
  cfg.validate();
  auto tok = prep_tokenizer(cfg.tokenizer, cfg.data_dir);
  const Split split = parse_split(cfg.out.split);
  const LogMel mel(cfg.mel);
  ShardSink sink(cfg.out, "mix", *tok, cfg.inputs, cfg.mel, cfg.f16);
  for (size_t f = 0; f < cfg.inputs.size(); ++f) {
    const std::string& manifest = cfg.inputs[f];
    const fs::path dir = fs::path(manifest).parent_path();
    std::vector<std::string> lines;
    std::vector<int64_t> line_no;
    {
      std::ifstream in(manifest, std::ios::binary);
      CASTOR_CHECK(in.good(), manifest, ": cannot open manifest");
      std::string line;
      for (int64_t n = 1; std::getline(in, line); ++n) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        lines.push_back(line);
        line_no.push_back(n);
      }
    }
    std::vector<int64_t> bytes(lines.size(), 0);
    parallel_ordered(
        int64_t(lines.size()),
        [&](int64_t i) {
          return mix_document(lines[size_t(i)], cat(manifest, ":", line_no[size_t(i)]), dir, cfg, *tok, mel, split,
                              int32_t(f), &bytes[size_t(i)]);
        },
        [&](int64_t i, DocumentData&& d) { sink.add(d, bytes[size_t(i)] + int64_t(lines[size_t(i)].size()) + 1); });
  }
  return sink.finish();
}

}  // namespace castor::io
