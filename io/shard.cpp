// Corpus shard writer and reader (schema 1.1). The writer streams tokens, pixels and
// features into extendible chunked datasets of a temporary file and renames it into place
// on close(); the reader validates the header and every table on open, token ids on read.
#include "io/shard.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <utility>

namespace castor::io {

namespace {

constexpr int64_t kMaxVocab = std::numeric_limits<int32_t>::max();
// Chunks of ~256 KiB: small enough that a random image or clip read touches little more
// than itself, large enough for sequential prep writes.
constexpr int64_t kChunkBytes = int64_t{1} << 18;

H5Elem token_elem(int64_t vocab_size) { return vocab_size <= 65536 ? H5Elem::u16 : H5Elem::i32; }

// Offsets table: n + 1 entries, 0 first, non-decreasing, `total` last.
std::vector<int64_t> read_offsets(const Group& g, const std::string& name, int64_t n, int64_t total,
                                  const char* what) {
  const Dataset d = g.open_dataset(name);
  CASTOR_CHECK(d.shape().size() == 1 && d.is_integer(), d.where(), ": expected a 1-D integer dataset");
  CASTOR_CHECK(d.size() >= 1 && d.size() - 1 == n, d.where(), ": has ", d.size(), " entries, expected ", n, " + 1");
  CASTOR_CHECK(d.fully_written(), d.where(), ": storage for its ", d.size(), " entries was never written");
  std::vector<int64_t> v = d.read_all<int64_t>();
  for (size_t i = 0; i < v.size(); ++i) {
    CASTOR_CHECK(v[i] >= 0 && v[i] <= total, d.where(), ": offset[", i, "] = ", v[i], " outside [0, ", what, " ",
                 total, "]");
    CASTOR_CHECK(i == 0 || v[i] >= v[i - 1], d.where(), ": offsets not monotone: offset[", i, "] = ", v[i],
                 " < offset[", i - 1, "] = ", v[i - 1]);
  }
  CASTOR_CHECK(v.front() == 0, d.where(), ": offset[0] = ", v.front(), ", expected 0");
  CASTOR_CHECK(v.back() == total, d.where(), ": last offset ", v.back(), " != ", what, " ", total);
  return v;
}

template <typename T>
std::vector<T> read_column(const Group& g, const std::string& name, int64_t n) {
  const Dataset d = g.open_dataset(name);
  CASTOR_CHECK(d.shape().size() == 1 && d.is_integer(), d.where(), ": expected a 1-D integer dataset");
  CASTOR_CHECK(d.size() == n, d.where(), ": has ", d.size(), " entries, expected ", n);
  CASTOR_CHECK(d.fully_written(), d.where(), ": storage for its ", d.size(), " entries was never written");
  return d.read_all<T>();
}

int64_t optional_count(const Group& root, const char* name) {
  if (!root.has_attr(name)) return 0;
  const int64_t v = root.read_attr_int64(name);
  CASTOR_CHECK(v >= 0, root.attr_where(name), ": negative (", v, ")");
  return v;
}

}  // namespace

const char* segment_kind_name(SegmentKind k) {
  switch (k) {
    case SegmentKind::text:
      return "text";
    case SegmentKind::image:
      return "image";
    case SegmentKind::audio:
      return "audio";
  }
  return "?";
}

const char* split_name(Split s) {
  switch (s) {
    case Split::train:
      return "train";
    case Split::validation:
      return "validation";
    case Split::test:
      return "test";
  }
  return "?";
}

Split parse_split(const std::string& name) {
  if (name == "train") return Split::train;
  if (name == "validation" || name == "val") return Split::validation;
  if (name == "test") return Split::test;
  CASTOR_FAIL("unknown split '", name, "' (train, validation or test)");
}

std::vector<std::string> list_shards(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CASTOR_CHECK(fs::exists(path, ec), path, ": no such file or directory");
  if (!fs::is_directory(path, ec)) return {path};
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file() && e.path().extension() == ".h5") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  CASTOR_CHECK(!files.empty(), path, ": directory holds no *.h5 shards");
  return files;
}

// ---------------------------------------------------------------------------- ShardWriter

ShardWriter::ShardWriter(std::string path, std::string tokenizer, int64_t vocab_size, int32_t eot_id,
                         ShardWriterOptions opts)
    : out_(std::move(path)),
      tokenizer_(std::move(tokenizer)),
      vocab_size_(vocab_size),
      eot_id_(eot_id),
      opts_(std::move(opts)) {
  CASTOR_CHECK(!tokenizer_.empty(), out_.path(), ": shard needs a tokenizer name");
  CASTOR_CHECK(vocab_size_ >= 1 && vocab_size_ <= kMaxVocab, out_.path(), ": vocab_size ", vocab_size_, " outside [1, ",
               kMaxVocab, "]");
  CASTOR_CHECK(eot_id_ >= 0 && eot_id_ < vocab_size_, out_.path(), ": eot_id ", eot_id_, " outside [0, vocab_size ",
               vocab_size_, ")");
  CASTOR_CHECK(opts_.chunk_tokens >= 1, out_.path(), ": chunk_tokens must be >= 1, got ", opts_.chunk_tokens);
  CASTOR_CHECK(opts_.deflate_level >= 0 && opts_.deflate_level <= 9, out_.path(), ": deflate level must be 0..9, got ",
               opts_.deflate_level);
  if (opts_.audio) opts_.audio->validate();
  out_.create();  // on a throw below, out_ removes the temporary file
  Group root = out_.file().root();
  DatasetOptions d;
  d.deflate_level = opts_.deflate_level;
  d.extendible = true;
  d.checksum = true;  // a damaged chunk of tokens, pixels or features is an error on read
  d.chunk_rows = opts_.chunk_tokens;
  tokens_ = root.create_dataset("text/tokens", token_elem(vocab_size_), {0}, d);
  d.chunk_rows = kChunkBytes;
  pixels_ = root.create_dataset("images/pixels", H5Elem::u8, {0}, d);
  if (opts_.audio) {
    d.chunk_rows = kChunkBytes / int64_t(sizeof(float)) / opts_.audio->n_mels + 1;
    features_ = root.create_dataset("audio/features", opts_.audio_f16 ? H5Elem::f16 : H5Elem::f32,
                                    {0, opts_.audio->n_mels}, d);
  }
}

void ShardWriter::add_document(std::span<const int32_t> tokens) {
  DocumentData doc;
  doc.segments.resize(1);
  doc.segments[0].tokens.assign(tokens.begin(), tokens.end());
  add_document(doc);
}

void ShardWriter::check_document(const DocumentData& doc) const {
  const int64_t d = num_documents();
  CASTOR_CHECK(doc.source >= -1 && doc.source < static_cast<int64_t>(opts_.sources.size()), path(), ": document ", d,
               ": source ", doc.source, " outside [-1, ", opts_.sources.size(), ")");
  for (size_t s = 0; s < doc.segments.size(); ++s) {
    const SegmentData& seg = doc.segments[s];
    switch (seg.kind) {
      case SegmentKind::text:
        for (size_t i = 0; i < seg.tokens.size(); ++i) {
          const int32_t id = seg.tokens[i];
          CASTOR_CHECK(id >= 0 && id < vocab_size_, path(), ": document ", d, ": token id ", id, " at position ", i,
                       " outside [0, vocab_size ", vocab_size_, ")");
        }
        CASTOR_CHECK(seg.pair == -1, path(), ": document ", d, " segment ", s, ": a text segment cannot have a pair");
        break;
      case SegmentKind::image: {
        const Image& im = seg.image;
        CASTOR_CHECK(im.height >= 1 && im.width >= 1 && (im.channels == 1 || im.channels == 3) &&
                         im.height <= std::numeric_limits<int32_t>::max() &&
                         im.width <= std::numeric_limits<int32_t>::max(),
                     path(), ": document ", d, " segment ", s, ": bad image shape ", im.height, "x", im.width, "x",
                     im.channels);
        CASTOR_CHECK(static_cast<int64_t>(im.pixels.size()) == im.height * im.width * im.channels, path(),
                     ": document ", d, " segment ", s, ": image has ", im.pixels.size(), " bytes, shape says ",
                     im.height * im.width * im.channels);
        break;
      }
      case SegmentKind::audio:
        CASTOR_CHECK(opts_.audio.has_value(), path(), ": document ", d, " segment ", s,
                     ": audio segment, but the writer has no audio feature config");
        CASTOR_CHECK(seg.audio.frames >= 1 && seg.audio.num_samples >= 1 &&
                         static_cast<int64_t>(seg.audio.data.size()) == seg.audio.frames * opts_.audio->n_mels,
                     path(), ": document ", d, " segment ", s, ": audio features of ", seg.audio.data.size(),
                     " values for ", seg.audio.frames, " frames x ", opts_.audio->n_mels, " mels");
        CASTOR_CHECK(seg.audio.num_samples / opts_.audio->hop_length + 1 == seg.audio.frames, path(), ": document ", d,
                     " segment ", s, ": ", seg.audio.num_samples, " samples make ",
                     seg.audio.num_samples / opts_.audio->hop_length + 1, " frames, not ", seg.audio.frames);
        break;
      default:
        CASTOR_FAIL(path(), ": document ", d, " segment ", s, ": unknown segment kind ", int(seg.kind));
    }
    if (seg.kind != SegmentKind::text && seg.pair != -1) {
      CASTOR_CHECK(seg.pair >= 0 && seg.pair < static_cast<int64_t>(doc.segments.size()) &&
                       doc.segments[static_cast<size_t>(seg.pair)].kind == SegmentKind::text,
                   path(), ": document ", d, " segment ", s, ": pair ", seg.pair,
                   " is not a text segment of the same document");
    }
  }
}

void ShardWriter::add_document(const DocumentData& doc) {
  CASTOR_CHECK(!out_.committed(), path(), ": add_document after close()");
  check_document(doc);  // nothing is appended unless the whole document is valid
  const int64_t first_seg = static_cast<int64_t>(seg_kind_.size());
  for (const SegmentData& seg : doc.segments) {
    seg_kind_.push_back(static_cast<uint8_t>(seg.kind));
    seg_flags_.push_back(seg.flags);
    seg_pair_.push_back(seg.pair < 0 ? -1 : first_seg + seg.pair);
    switch (seg.kind) {
      case SegmentKind::text:
        seg_start_.push_back(token_count_);
        seg_length_.push_back(static_cast<int64_t>(seg.tokens.size()));
        append_tokens(seg.tokens);
        token_count_ += static_cast<int64_t>(seg.tokens.size());
        break;
      case SegmentKind::image:
        seg_start_.push_back(num_images());
        seg_length_.push_back(1);
        image_shape_.insert(image_shape_.end(), {static_cast<int32_t>(seg.image.height),
                                                 static_cast<int32_t>(seg.image.width),
                                                 static_cast<int32_t>(seg.image.channels)});
        pixel_buf_.insert(pixel_buf_.end(), seg.image.pixels.begin(), seg.image.pixels.end());
        image_offsets_.push_back(image_offsets_.back() + static_cast<int64_t>(seg.image.pixels.size()));
        if (static_cast<int64_t>(pixel_buf_.size()) >= kChunkBytes) flush();
        break;
      case SegmentKind::audio:
        seg_start_.push_back(num_audio());
        seg_length_.push_back(1);
        feature_buf_.insert(feature_buf_.end(), seg.audio.data.begin(), seg.audio.data.end());
        audio_offsets_.push_back(audio_offsets_.back() + seg.audio.frames);
        audio_samples_.push_back(seg.audio.num_samples);
        if (feature_buf_.size() >= (size_t{1} << 18)) flush();
        break;
    }
  }
  doc_offsets_.push_back(token_count_);
  seg_doc_offsets_.push_back(static_cast<int64_t>(seg_kind_.size()));
  doc_source_.push_back(doc.source);
  doc_split_.push_back(static_cast<uint8_t>(doc.split));
}

void ShardWriter::append_tokens(std::span<const int32_t> tokens) {
  size_t pos = 0;
  while (pos < tokens.size()) {
    const size_t room = static_cast<size_t>(opts_.chunk_tokens) - token_buf_.size();
    const size_t take = std::min(room, tokens.size() - pos);
    token_buf_.insert(token_buf_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(pos),
                      tokens.begin() + static_cast<std::ptrdiff_t>(pos + take));
    pos += take;
    if (token_buf_.size() == static_cast<size_t>(opts_.chunk_tokens)) {
      tokens_.append(token_buf_.data(), static_cast<int64_t>(token_buf_.size()));
      token_buf_.clear();
    }
  }
}

void ShardWriter::flush() {
  if (!token_buf_.empty()) tokens_.append(token_buf_.data(), static_cast<int64_t>(token_buf_.size()));
  token_buf_.clear();
  if (!pixel_buf_.empty()) pixels_.append(pixel_buf_.data(), static_cast<int64_t>(pixel_buf_.size()));
  pixel_buf_.clear();
  if (!feature_buf_.empty())
    features_.append(feature_buf_.data(), static_cast<int64_t>(feature_buf_.size()) / opts_.audio->n_mels);
  feature_buf_.clear();
}

void ShardWriter::close() {
  CASTOR_CHECK(!out_.committed(), path(), ": close() called twice");
  flush();
  CASTOR_CHECK(tokens_.size() == num_tokens(), path(), ": wrote ", tokens_.size(), " tokens, expected ", num_tokens());
  {
    Group root = out_.file().root();
    DatasetOptions d;
    d.deflate_level = opts_.deflate_level;
    root.write_vector<int64_t>("text/doc_offsets", doc_offsets_, d);
    root.write_vector<uint8_t>("segments/kind", seg_kind_, d);
    root.write_vector<uint8_t>("segments/flags", seg_flags_, d);
    root.write_vector<int64_t>("segments/start", seg_start_, d);
    root.write_vector<int64_t>("segments/length", seg_length_, d);
    root.write_vector<int64_t>("segments/pair", seg_pair_, d);
    root.write_vector<int64_t>("segments/doc_offsets", seg_doc_offsets_, d);
    root.write_vector<int32_t>("docs/source", doc_source_, d);
    Dataset split = root.write_vector<uint8_t>("docs/split", doc_split_, d);
    split.write_attr_strings("names", {"train", "validation", "test"});
    root.write_vector<int64_t>("images/offsets", image_offsets_, d);
    root.write_array<int32_t>("images/shape", {num_images(), 3}, image_shape_.data(), d);
    if (opts_.audio) {
      root.write_vector<int64_t>("audio/frame_offsets", audio_offsets_, d);
      root.write_vector<int64_t>("audio/num_samples", audio_samples_, d);
      Group audio = root.open_group("audio");
      const LogMelConfig& c = *opts_.audio;
      audio.write_attr_string("feature", "log-mel");
      audio.write_attr_int64("sample_rate", c.sample_rate);
      audio.write_attr_int64("n_fft", c.n_fft);
      audio.write_attr_int64("win_length", c.win_length);
      audio.write_attr_int64("hop_length", c.hop_length);
      audio.write_attr_int64("n_mels", c.n_mels);
      audio.write_attr_double("f_min", c.f_min);
      audio.write_attr_double("f_max", c.f_max);
    }
    write_castor_header(root, kShardFormat, kShardSchemaVersion);
    root.write_attr_string("tokenizer", tokenizer_);
    root.write_attr_int64("vocab_size", vocab_size_);
    root.write_attr_int64("eot_id", eot_id_);
    root.write_attr_int64("num_documents", num_documents());
    root.write_attr_int64("num_tokens", num_tokens());
    root.write_attr_int64("num_segments", static_cast<int64_t>(seg_kind_.size()));
    root.write_attr_int64("num_images", num_images());
    root.write_attr_int64("num_audio", num_audio());
    Group meta = root.create_group("meta");
    meta.write_attr_strings("sources", opts_.sources);
  }
  tokens_ = Dataset();
  pixels_ = Dataset();
  features_ = Dataset();
  out_.commit();
}

// ---------------------------------------------------------------------------- ShardReader

ShardReader::ShardReader(const std::string& path) : file_(File::open_read(path, /*require_checksums=*/true)) {
  const Group root = file_.root();
  schema_version_ = check_castor_header(root, kShardFormat, kShardSchemaMajor);
  tokenizer_ = root.read_attr_string("tokenizer");
  CASTOR_CHECK(!tokenizer_.empty(), root.attr_where("tokenizer"), ": empty");
  vocab_size_ = root.read_attr_int64("vocab_size");
  CASTOR_CHECK(vocab_size_ >= 1 && vocab_size_ <= kMaxVocab, root.attr_where("vocab_size"), ": ", vocab_size_,
               " outside [1, ", kMaxVocab, "]");
  const int64_t eot = root.read_attr_int64("eot_id");
  CASTOR_CHECK(eot >= 0 && eot < vocab_size_, root.attr_where("eot_id"), ": ", eot, " outside [0, vocab_size ",
               vocab_size_, ")");
  eot_id_ = static_cast<int32_t>(eot);
  const int64_t num_docs = root.read_attr_int64("num_documents");
  CASTOR_CHECK(num_docs >= 0, root.attr_where("num_documents"), ": negative (", num_docs, ")");
  const int64_t num_tokens = root.read_attr_int64("num_tokens");
  CASTOR_CHECK(num_tokens >= 0, root.attr_where("num_tokens"), ": negative (", num_tokens, ")");

  tokens_ = root.open_dataset("text/tokens");
  CASTOR_CHECK(tokens_.shape().size() == 1, tokens_.where(), ": expected rank 1, found rank ", tokens_.shape().size());
  CASTOR_CHECK(tokens_.is_integer(), tokens_.where(), ": token ids must be integers, stored as ",
               tokens_.is_float() ? "float" : "non-numeric data");
  CASTOR_CHECK(tokens_.size() == num_tokens, tokens_.where(), ": has ", tokens_.size(),
               " tokens, attribute /num_tokens says ", num_tokens);
  CASTOR_CHECK(tokens_.fully_written(), tokens_.where(), ": storage for its ", tokens_.size(),
               " tokens was never written");
  tokens_u16_ = tokens_.elem() == H5Elem::u16;
  offsets_ = read_offsets(root, "text/doc_offsets", num_docs, num_tokens, "num_tokens");

  if (root.is_group("meta")) {
    const Group meta = root.open_group("meta");
    if (meta.has_attr("sources")) sources_ = meta.read_attr_strings("sources");
  }
  read_images(root);
  read_audio_tables(root);
  read_segments(root);
  read_docs(root);
}

void ShardReader::read_images(const Group& root) {
  const int64_t n = optional_count(root, "num_images");
  if (!root.exists("images")) {
    CASTOR_CHECK(n == 0, root.attr_where("num_images"), ": ", n, " images but no /images group");
    return;
  }
  pixels_ = root.open_dataset("images/pixels");
  CASTOR_CHECK(pixels_.shape().size() == 1 && pixels_.is_integer(), pixels_.where(),
               ": expected a 1-D uint8 dataset");
  CASTOR_CHECK(pixels_.fully_written(), pixels_.where(), ": storage was never written");
  image_offsets_ = read_offsets(root, "images/offsets", n, pixels_.size(), "pixel bytes");
  const Dataset shape = root.open_dataset("images/shape");
  CASTOR_CHECK(shape.shape() == std::vector<int64_t>({n, 3}) && shape.is_integer(), shape.where(),
               ": expected an integer dataset of shape [", n, ", 3]");
  CASTOR_CHECK(shape.fully_written(), shape.where(), ": storage was never written");
  image_shape_ = shape.read_all<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t h = image_shape_[size_t(3 * i)], w = image_shape_[size_t(3 * i + 1)],
                  c = image_shape_[size_t(3 * i + 2)];
    CASTOR_CHECK(h >= 1 && w >= 1 && (c == 1 || c == 3), shape.where(), ": image ", i, ": bad shape ", h, "x", w, "x",
                 c, " (need height, width >= 1 and 1 or 3 channels)");
    int64_t bytes = 0;  // h, w < 2^31 and c <= 3: h * w fits, the product with c may not
    const bool overflow = __builtin_mul_overflow(h * w, c, &bytes);
    CASTOR_CHECK(!overflow && bytes == image_bytes(i), shape.where(), ": image ", i, ": shape ", h, "x", w, "x", c,
                 " does not match the ", image_bytes(i), " bytes /images/offsets gives");
  }
}

void ShardReader::read_audio_tables(const Group& root) {
  const int64_t n = optional_count(root, "num_audio");
  if (!root.exists("audio")) {
    CASTOR_CHECK(n == 0, root.attr_where("num_audio"), ": ", n, " audio clips but no /audio group");
    return;
  }
  const Group g = root.open_group("audio");
  const std::string feature = g.read_attr_string("feature");
  CASTOR_CHECK(feature == "log-mel", g.attr_where("feature"), ": unsupported feature '", feature, "' (log-mel)");
  LogMelConfig c;
  c.sample_rate = g.read_attr_int64("sample_rate");
  c.n_fft = g.read_attr_int64("n_fft");
  c.win_length = g.read_attr_int64("win_length");
  c.hop_length = g.read_attr_int64("hop_length");
  c.n_mels = g.read_attr_int64("n_mels");
  c.f_min = g.read_attr_double("f_min");
  c.f_max = g.read_attr_double("f_max");
  try {
    c.validate();
  } catch (const Error& e) {
    CASTOR_FAIL(g.where(), ": bad feature attributes: ", e.what());
  }
  audio_cfg_ = c;
  features_ = root.open_dataset("audio/features");
  const std::vector<int64_t> fs = features_.shape();
  CASTOR_CHECK(fs.size() == 2 && fs[1] == c.n_mels && features_.is_float(), features_.where(),
               ": expected a float dataset of shape [frames, ", c.n_mels, "]");
  CASTOR_CHECK(features_.fully_written(), features_.where(), ": storage was never written");
  audio_f16_ = features_.elem() == H5Elem::f16;
  audio_offsets_ = read_offsets(root, "audio/frame_offsets", n, fs[0], "frames");
  audio_samples_ = read_column<int64_t>(root, "audio/num_samples", n);
  for (int64_t a = 0; a < n; ++a) {
    const int64_t frames = audio_frames(a), samples = audio_samples_[size_t(a)];
    CASTOR_CHECK(frames >= 1, file_.path(), ": /audio/frame_offsets: clip ", a, " has no frames");
    CASTOR_CHECK(samples >= 1, file_.path(), ": /audio/num_samples: clip ", a, " has num_samples ", samples);
    // A clip of n samples has 1 + n / hop frames (centred frames): this bounds the sample
    // counts by the stored frames, so their sum cannot overflow.
    CASTOR_CHECK(samples / c.hop_length + 1 == frames, file_.path(), ": /audio/num_samples: clip ", a, ": ", samples,
                 " samples make ", samples / c.hop_length + 1, " frames at hop ", c.hop_length,
                 ", /audio/frame_offsets gives ", frames);
    CASTOR_CHECK(!__builtin_add_overflow(total_samples_, samples, &total_samples_), file_.path(),
                 ": /audio/num_samples: total overflows");
  }
}

void ShardReader::read_segments(const Group& root) {
  const int64_t docs = num_documents();
  if (!root.exists("segments")) {  // schema 1.0: one text segment per document
    segments_.resize(size_t(docs));
    seg_offsets_.resize(size_t(docs) + 1);
    for (int64_t d = 0; d <= docs; ++d) seg_offsets_[size_t(d)] = d;
    for (int64_t d = 0; d < docs; ++d)
      segments_[size_t(d)] = {SegmentKind::text, 0, offsets_[size_t(d)], offsets_[size_t(d) + 1] - offsets_[size_t(d)],
                              -1};
    CASTOR_CHECK(num_images() == 0 && num_audio() == 0, file_.path(), ": images or audio present without /segments");
    return;
  }
  const int64_t n = root.read_attr_int64("num_segments");
  CASTOR_CHECK(n >= 0, root.attr_where("num_segments"), ": negative (", n, ")");
  seg_offsets_ = read_offsets(root, "segments/doc_offsets", docs, n, "num_segments");
  const auto kind = read_column<uint8_t>(root, "segments/kind", n);
  const auto flags = read_column<uint8_t>(root, "segments/flags", n);
  const auto start = read_column<int64_t>(root, "segments/start", n);
  const auto length = read_column<int64_t>(root, "segments/length", n);
  const auto pair = read_column<int64_t>(root, "segments/pair", n);
  const std::string where = file_.path() + ": /segments";
  segments_.resize(size_t(n));
  int64_t next_image = 0, next_audio = 0;
  for (int64_t d = 0; d < docs; ++d) {
    int64_t next_token = offsets_[size_t(d)];
    const int64_t s0 = seg_offsets_[size_t(d)], s1 = seg_offsets_[size_t(d) + 1];
    for (int64_t s = s0; s < s1; ++s) {
      const size_t i = size_t(s);
      SegmentInfo& seg = segments_[i];
      CASTOR_CHECK(kind[i] <= 2, where, "/kind: segment ", s, ": unknown kind ", int(kind[i]));
      seg = {static_cast<SegmentKind>(kind[i]), flags[i], start[i], length[i], pair[i]};
      if (seg.kind == SegmentKind::text) {
        CASTOR_CHECK(seg.start == next_token && seg.length >= 0 && seg.length <= offsets_[size_t(d) + 1] - next_token,
                     where, "/start: segment ", s, " (text, document ", d, "): tokens [", seg.start, ", +", seg.length,
                     ") do not continue the document's tokens at ", next_token);
        next_token += seg.length;
        CASTOR_CHECK(seg.pair == -1, where, "/pair: segment ", s, ": text segment with pair ", seg.pair);
        continue;
      }
      int64_t& next = seg.kind == SegmentKind::image ? next_image : next_audio;
      const int64_t count = seg.kind == SegmentKind::image ? num_images() : num_audio();
      CASTOR_CHECK(seg.start == next && seg.start < count && seg.length == 1, where, "/start: segment ", s, " (",
                   segment_kind_name(seg.kind), "): refers to item ", seg.start, " (length ", seg.length,
                   "), expected item ", next, " of ", count);
      ++next;
      CASTOR_CHECK(seg.pair == -1 || (seg.pair >= s0 && seg.pair < s1 && kind[size_t(seg.pair)] == 0), where,
                   "/pair: segment ", s, ": pair ", seg.pair, " is not a text segment of document ", d);
    }
    CASTOR_CHECK(next_token == offsets_[size_t(d) + 1], where, ": document ", d, ": text segments cover tokens up to ",
                 next_token, ", /text/doc_offsets ends it at ", offsets_[size_t(d) + 1]);
  }
  CASTOR_CHECK(next_image == num_images(), where, ": ", next_image, " image segments for ", num_images(), " images");
  CASTOR_CHECK(next_audio == num_audio(), where, ": ", next_audio, " audio segments for ", num_audio(), " clips");
}

void ShardReader::read_docs(const Group& root) {
  if (!root.exists("docs")) return;
  doc_source_ = read_column<int32_t>(root, "docs/source", num_documents());
  doc_split_ = read_column<uint8_t>(root, "docs/split", num_documents());
  for (size_t d = 0; d < doc_source_.size(); ++d) {
    CASTOR_CHECK(doc_source_[d] >= -1 && doc_source_[d] < static_cast<int64_t>(sources_.size()), file_.path(),
                 ": /docs/source: document ", d, ": source ", doc_source_[d], " outside [-1, ", sources_.size(), ")");
    CASTOR_CHECK(doc_split_[d] <= 2, file_.path(), ": /docs/split: document ", d, ": unknown split ",
                 int(doc_split_[d]));
  }
}

void ShardReader::read_image(int64_t i, uint8_t* out) const {
  CASTOR_CHECK(i >= 0 && i < num_images(), path(), ": image ", i, " outside [0, ", num_images(), ")");
  pixels_.read_range(image_offsets_[size_t(i)], image_bytes(i), out);
}

void ShardReader::read_audio(int64_t a, float* out) const {
  CASTOR_CHECK(a >= 0 && a < num_audio(), path(), ": audio clip ", a, " outside [0, ", num_audio(), ")");
  features_.read_range(audio_offsets_[size_t(a)], audio_frames(a), out);
}

void ShardReader::read_tokens(int64_t begin, int64_t count, int32_t* out) const {
  if (tokens_u16_) {
    // Read the stored uint16 and widen here: asking HDF5 to convert allocates and zeroes a
    // 1 MiB conversion buffer per read, most of the cost of a window (bench/NOTES.md).
    thread_local std::vector<uint16_t> stored;
    stored.resize(size_t(count));
    tokens_.read_range(begin, count, stored.data());
    std::copy(stored.begin(), stored.end(), out);
  } else {
    tokens_.read_range(begin, count, out);
  }
  for (int64_t i = 0; i < count; ++i) {
    const int32_t id = out[i];
    if (id < 0 || id >= vocab_size_) {
      CASTOR_FAIL(tokens_.where(), ": id ", id, id < 0 ? " < 0" : " >= vocab_size ",
                  id < 0 ? std::string() : std::to_string(vocab_size_), " at index ", begin + i);
    }
  }
}

std::vector<int32_t> ShardReader::read_document(int64_t doc) const {
  CASTOR_CHECK(doc >= 0 && doc < num_documents(), path(), ": document ", doc, " outside [0, ", num_documents(), ")");
  const int64_t begin = offsets_[static_cast<size_t>(doc)];
  std::vector<int32_t> out(static_cast<size_t>(offsets_[static_cast<size_t>(doc) + 1] - begin));
  read_tokens(begin, static_cast<int64_t>(out.size()), out.data());
  return out;
}

}  // namespace castor::io
