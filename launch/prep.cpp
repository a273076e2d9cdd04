// `castor prep text|images|audio|mix`: options for the pipelines of io/prep.h (common
// output options in one place), then the pipeline and its one-line summary.
#include <boost/program_options.hpp>
#include <cstdio>

#include "core/error.h"
#include "io/prep.h"
#include "kernels/cpu/gemm.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace po = boost::program_options;

namespace castor::launch {
namespace {

const char* kPrepUsage =
    "Usage: castor prep <pipeline> [options]     (castor prep <pipeline> --help)\n"
    "\n"
    "Pipelines:\n"
    "  text     plain text or JSON lines -> tokenized text documents\n"
    "  images   IDX (MNIST format) images + labels, or PNG files + captions -> image/caption documents\n"
    "  audio    WAV files + transcripts -> log-mel audio/transcript documents\n"
    "  mix      JSON lines manifests of interleaved text, image and audio segments\n";

// Options every pipeline shares (io::PrepBase, plus --threads and --quiet, which run()
// applies).
void add_common(po::options_description& desc, io::PrepBase& c, int& threads) {
  desc.add_options()("help,h", "print this help and exit")(
      "out", po::value<std::string>(&c.out.out_dir), "output directory for the shards")(
      "prefix", po::value<std::string>(&c.out.prefix)->default_value(c.out.prefix), "shard file name prefix")(
      "shard-size", po::value<double>(&c.out.shard_mb)->default_value(c.out.shard_mb, format_default(c.out.shard_mb)),
      "start a new shard past this many MB of tokens, pixels and features")(
      "deflate", po::value<int>(&c.out.deflate)->default_value(c.out.deflate), "gzip level 1-9 (0 = uncompressed)")(
      "split", po::value<std::string>(&c.out.split)->default_value(c.out.split),
      "split recorded for the documents: train, validation or test")(
      "tokenizer", po::value<std::string>(&c.tokenizer)->default_value(c.tokenizer), "gpt2 or byte")(
      "data-dir", po::value<std::string>(&c.data_dir), "tokenizer files directory (default: the bundled data/)")(
      "threads", po::value<int>(&threads)->default_value(0), "worker threads; 0 = all cores")(
      "overwrite", po::bool_switch(&c.out.overwrite), "replace shards <prefix>-*.h5 already in --out")(
      "quiet", "no progress output");
}

void add_mel(po::options_description& desc, io::LogMelConfig& m, bool& f16) {
  desc.add_options()("sample-rate", po::value<int64_t>(&m.sample_rate)->default_value(m.sample_rate),
                     "audio is resampled to this rate (Hz) before features")(
      "n-fft", po::value<int64_t>(&m.n_fft)->default_value(m.n_fft), "FFT size (samples)")(
      "win-length", po::value<int64_t>(&m.win_length)->default_value(m.win_length), "Hann window length (samples)")(
      "hop-length", po::value<int64_t>(&m.hop_length)->default_value(m.hop_length), "frame hop (samples)")(
      "n-mels", po::value<int64_t>(&m.n_mels)->default_value(m.n_mels), "mel bins")(
      "f-min", po::value<double>(&m.f_min)->default_value(m.f_min, format_default(m.f_min)), "lowest mel frequency (Hz)")(
      "f-max", po::value<double>(&m.f_max)->default_value(m.f_max, format_default(m.f_max)),
      "highest mel frequency (Hz)")("f16", po::bool_switch(&f16), "store features as float16 (default float32)");
}

// Parses, applies the common options and runs the pipeline; prints its summary.
template <typename Config>
int run(const std::vector<std::string>& args, po::options_description& desc, Config& cfg, int threads,
        const char* name, io::PrepStats (*pipeline)(const Config&)) {
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  CASTOR_CHECK(threads >= 0, "--threads must be >= 0 (got ", threads, ")");
  if (threads > 0) kernels::cpu::set_num_threads(threads);
  cfg.out.progress = vm.count("quiet") == 0;
  const io::PrepStats s = pipeline(cfg);
  std::printf("%s\n", s.summary(name, cfg.out.out_dir).c_str());
  return 0;
}

int prep_text(const std::vector<std::string>& args) {
  io::PrepTextConfig cfg;
  int threads = 0;
  po::options_description desc(
      "castor prep text: tokenize plain text or JSON lines into HDF5 shards.\n"
      "Usage: castor prep text --input FILE [FILE ...] --out DIR [options]");
  add_common(desc, cfg, threads);
  desc.add_options()("input", po::value<std::vector<std::string>>(&cfg.inputs)->multitoken(),
                     "input files (.txt or .jsonl)")(
      "format", po::value<std::string>(&cfg.format)->default_value(cfg.format), "auto (by extension), text or jsonl")(
      "doc-boundary", po::value<std::string>(&cfg.doc_boundary)->default_value(cfg.doc_boundary),
      "text documents end at a blank line, every line, or the end of the file (blank|line|file)")(
      "jsonl-key", po::value<std::string>(&cfg.jsonl_key)->default_value(cfg.jsonl_key),
      "JSON lines: the string field holding the document");
  return run(args, desc, cfg, threads, "text", &io::prep_text);
}

int prep_images(const std::vector<std::string>& args) {
  io::PrepImagesConfig cfg;
  int threads = 0;
  po::options_description desc(
      "castor prep images: images with captions -> HDF5 shards of (image, caption) documents.\n"
      "Usage: castor prep images --idx-images F --idx-labels F --class-names F --out DIR [options]\n"
      "   or: castor prep images --manifest TSV --out DIR [options]   (lines \"<png path>\\t<caption>\")");
  add_common(desc, cfg, threads);
  desc.add_options()("idx-images", po::value<std::string>(&cfg.idx_images),
                     "IDX image file (MNIST format, .gz accepted)")(
      "idx-labels", po::value<std::string>(&cfg.idx_labels), "IDX label file matching --idx-images")(
      "class-names", po::value<std::string>(&cfg.class_names), "file with one class name per line (label order)")(
      "caption-template", po::value<std::string>(&cfg.caption_template)->default_value(cfg.caption_template),
      "caption text; {} becomes the class name")(
      "manifest", po::value<std::string>(&cfg.manifest), "TSV of PNG paths (relative to it) and captions")(
      "size", po::value<int64_t>(&cfg.size)->default_value(cfg.size),
      "images are resized (shorter side) and centre-cropped to size x size")(
      "channels", po::value<int64_t>(&cfg.channels)->default_value(cfg.channels), "1 (gray) or 3 (RGB)")(
      "limit", po::value<int64_t>(&cfg.limit)->default_value(cfg.limit), "only the first N images (0 = all)");
  return run(args, desc, cfg, threads, "images", &io::prep_images);
}

int prep_audio(const std::vector<std::string>& args) {
  io::PrepAudioConfig cfg;
  int threads = 0;
  po::options_description desc(
      "castor prep audio: WAV files with transcripts -> HDF5 shards of (log-mel audio, transcript) documents.\n"
      "Usage: castor prep audio --manifest TSV --out DIR [options]   (lines \"<wav path>\\t<transcript>\")");
  add_common(desc, cfg, threads);
  desc.add_options()("manifest", po::value<std::string>(&cfg.manifest),
                     "TSV of WAV paths (relative to it) and transcripts")(
      "limit", po::value<int64_t>(&cfg.limit)->default_value(cfg.limit), "only the first N clips (0 = all)");
  add_mel(desc, cfg.mel, cfg.f16);
  return run(args, desc, cfg, threads, "audio", &io::prep_audio);
}

int prep_mix(const std::vector<std::string>& args) {
  io::PrepMixConfig cfg;
  int threads = 0;
  po::options_description desc(
      "castor prep mix: JSON lines manifests of interleaved documents -> HDF5 shards.\n"
      "Each line: {\"segments\": [{\"text\": \"...\"}, {\"image\": \"a.png\", \"pair\": 2}, {\"audio\": \"b.wav\"}, ...],\n"
      "\"split\": \"train\"} (or just the array); paths are relative to the manifest; see docs/data-format.md.\n"
      "Usage: castor prep mix --input MANIFEST [MANIFEST ...] --out DIR [options]");
  add_common(desc, cfg, threads);
  desc.add_options()("input", po::value<std::vector<std::string>>(&cfg.inputs)->multitoken(),
                     "JSON lines manifests")("size", po::value<int64_t>(&cfg.image_size)->default_value(cfg.image_size),
                                             "images are resized and centre-cropped to size x size")(
      "channels", po::value<int64_t>(&cfg.channels)->default_value(cfg.channels), "1 (gray) or 3 (RGB)");
  add_mel(desc, cfg.mel, cfg.f16);
  return run(args, desc, cfg, threads, "mix", &io::prep_mix);
}

}  // namespace

int prep_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kPrepUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "text") return prep_text(rest);
  if (args[0] == "images") return prep_images(rest);
  if (args[0] == "audio") return prep_audio(rest);
  if (args[0] == "mix") return prep_mix(rest);
  CASTOR_FAIL("unknown prep pipeline '", args[0], "' (available: text, images, audio, mix)");
}

}  // namespace castor::launch
