// castor_bench_cuda_gemm: bf16 GEMM throughput of kernels/cuda/gemm.cuh (cuBLASLt) at the
// shapes of a GPT-2 "dense-m" training step: d_model 1024, MLP 4096, vocab 50304, rows =
// micro_batch x seq_len. Per linear (qkv, proj, fc, fc_proj, LM head): forward y = x W^T,
// backward dx = dy W and dW += dy^T x (fp32 grads, beta = 1); the LM head's logits are fp32
// as in lm_head_xent. Each GEMM: warm-up, then the median of --repeats calls timed with CUDA
// events, cycling through enough input copies that L2 never holds them. The last line is the
// FLOP-weighted average over one step (--layers x 4 linears + the head): the ceiling a step
// could reach. Attention's own matmuls are not included. Not a test: nothing asserts.
#include <cuda_runtime.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "kernels/cuda/gemm.cuh"

namespace po = boost::program_options;
namespace kc = castor::kernels::cuda;
using kc::bf16;

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's suggestion for Hopper
constexpr size_t kRotateBytes = size_t(256) << 20;    // operands cycled per GEMM: ~5x the H100 L2
constexpr int kMaxCopies = 16;

struct Options {
  int64_t micro_batch = 16, seq_len = 1024, layers = 24;
  int repeats = 20, warmup = 5;
};

// 0: run; 1: --help printed; 2: bad options (one line on stderr).
int parse_options(int argc, char** argv, Options& o) {
  po::options_description desc(
      "castor_bench_cuda_gemm: bf16 cuBLASLt GEMMs at the shapes of a GPT-2 dense-m step (d_model 1024, MLP 4096,\n"
      "vocab 50304): forward, dx and dW of each linear; ms, TFLOP/s and the FLOP-weighted step average\n"
      "Usage: castor_bench_cuda_gemm [options]");
  auto add = desc.add_options();
  add("help,h", "print this help and exit");
  add("micro-batch", po::value(&o.micro_batch)->default_value(o.micro_batch), "sequences per micro-batch");
  add("seq-len", po::value(&o.seq_len)->default_value(o.seq_len), "positions per sequence (rows = micro-batch x this)");
  add("layers", po::value(&o.layers)->default_value(o.layers), "transformer layers weighting the step average");
  add("repeats", po::value(&o.repeats)->default_value(o.repeats), "timed calls per GEMM (the median is reported)");
  add("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed calls per GEMM first");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 1;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "castor_bench_cuda_gemm: %s (see --help)\n", e.what());
    return 2;
  }
  if (o.micro_batch < 1 || o.seq_len < 1 || o.layers < 0 || o.repeats < 1 || o.warmup < 0) {
    std::fprintf(stderr,
                 "castor_bench_cuda_gemm: --micro-batch, --seq-len and --repeats must be >= 1, --layers and "
                 "--warmup >= 0\n");
    return 2;
  }
  return 0;
}

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "castor_bench_cuda_gemm: %s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

void check(castor::kernels::Status s, const char* what) {
  if (s == castor::kernels::Status::kOk) return;
  std::fprintf(stderr, "castor_bench_cuda_gemm: %s: %s\n", what, castor::kernels::status_string(s));
  std::exit(1);
}

// One GEMM of the step: C (M x N) = op(A) op(B) [+ C], A and B bf16, C bf16 or fp32.
struct GemmSpec {
  std::string name;
  bool ta, tb;
  int64_t M, N, K;
  bool c_float;   // fp32 output (weight gradients, LM head logits)
  float beta;     // 1: accumulate (dW)
  int64_t count;  // occurrences per training step
  double flops() const { return 2.0 * double(M) * double(N) * double(K); }
  size_t a_elems() const { return size_t(M) * size_t(K); }
  size_t b_elems() const { return size_t(K) * size_t(N); }
  size_t c_bytes() const { return size_t(M) * size_t(N) * (c_float ? sizeof(float) : sizeof(bf16)); }
  size_t set_bytes() const { return (a_elems() + b_elems()) * sizeof(bf16) + c_bytes(); }
};

// Forward, dx and dW of a linear layer y = x W^T with W (out x in) over `rows` rows.
void add_linear(std::vector<GemmSpec>& specs, const std::string& name, int64_t out, int64_t in, int64_t rows,
                int64_t count, bool float_logits) {
  specs.push_back({name + " fwd", false, true, rows, out, in, float_logits, 0.0f, count});  // y = x W^T
  specs.push_back({name + " dx", false, false, rows, in, out, false, 0.0f, count});         // dx = dy W
  specs.push_back({name + " dW", true, false, out, in, rows, true, 1.0f, count});           // dW += dy^T x
}

std::vector<GemmSpec> dense_m_gemms(const Options& o) {
  const int64_t rows = o.micro_batch * o.seq_len, d = 1024, mlp = 4096, vocab = 50304;
  std::vector<GemmSpec> specs;
  add_linear(specs, "qkv", 3 * d, d, rows, o.layers, false);
  add_linear(specs, "proj", d, d, rows, o.layers, false);
  add_linear(specs, "fc", mlp, d, rows, o.layers, false);
  add_linear(specs, "fc_proj", d, mlp, rows, o.layers, false);
  add_linear(specs, "lm_head", vocab, d, rows, 1, true);
  return specs;
}

// Uniform bf16 values in [-1, 1) from a fixed LCG: content does not matter, only that it
// is not all zeros (which some GPUs run at lower power).
std::vector<bf16> host_values(size_t n) {
  std::vector<bf16> v(n);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (bf16& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = __float2bfloat16_rn(float(int64_t(s >> 40) - (int64_t(1) << 23)) / float(1 << 23));
  }
  return v;
}

// Device operands of one spec, `copies` independent sets; freed on destruction.
struct Operands {
  std::vector<bf16*> a, b;
  std::vector<void*> c;
  Operands(const GemmSpec& s, int copies, const std::vector<bf16>& values) {
    for (int i = 0; i < copies; ++i) {
      a.push_back(upload(s.a_elems(), values));
      b.push_back(upload(s.b_elems(), values));
      void* p = nullptr;
      check(cudaMalloc(&p, s.c_bytes()), "cudaMalloc C");
      check(cudaMemset(p, 0, s.c_bytes()), "cudaMemset C");
      c.push_back(p);
    }
  }
  ~Operands() {
    for (bf16* p : a) cudaFree(p);
    for (bf16* p : b) cudaFree(p);
    for (void* p : c) cudaFree(p);
  }
  static bf16* upload(size_t n, const std::vector<bf16>& values) {
    bf16* p = nullptr;
    check(cudaMalloc(&p, n * sizeof(bf16)), "cudaMalloc operand");
    check(cudaMemcpy(p, values.data(), std::min(n, values.size()) * sizeof(bf16), cudaMemcpyHostToDevice),
          "cudaMemcpy operand");
    return p;
  }
};

void run_gemm(const kc::GemmContext& ctx, const GemmSpec& s, const Operands& op, int i) {
  // Stored A: (M x K), or (K x M) transposed; B: (K x N), or (N x K) transposed.
  const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
  const castor::kernels::Status st =
      s.c_float ? kc::gemm<bf16, float>(ctx, s.ta, s.tb, s.M, s.N, s.K, 1.0f, op.a[i], lda, op.b[i], ldb, s.beta,
                                        static_cast<float*>(op.c[i]), s.N, nullptr)
                : kc::gemm<bf16, bf16>(ctx, s.ta, s.tb, s.M, s.N, s.K, 1.0f, op.a[i], lda, op.b[i], ldb, s.beta,
                                       static_cast<bf16*>(op.c[i]), s.N, nullptr);
  check(st, s.name.c_str());
}

// Median milliseconds of `repeats` calls, each between its own pair of events.
double time_gemm(const kc::GemmContext& ctx, const GemmSpec& s, const Options& o, const std::vector<bf16>& values) {
  const int copies = int(std::clamp<size_t>((kRotateBytes + s.set_bytes() - 1) / s.set_bytes(), 1, kMaxCopies));
  const Operands op(s, copies, values);
  for (int i = 0; i < o.warmup; ++i) run_gemm(ctx, s, op, i % copies);
  std::vector<cudaEvent_t> start(size_t(o.repeats)), stop(size_t(o.repeats));
  for (int r = 0; r < o.repeats; ++r) {
    check(cudaEventCreate(&start[size_t(r)]), "cudaEventCreate");
    check(cudaEventCreate(&stop[size_t(r)]), "cudaEventCreate");
  }
  for (int r = 0; r < o.repeats; ++r) {
    check(cudaEventRecord(start[size_t(r)], nullptr), "cudaEventRecord");
    run_gemm(ctx, s, op, (o.warmup + r) % copies);
    check(cudaEventRecord(stop[size_t(r)], nullptr), "cudaEventRecord");
  }
  check(cudaDeviceSynchronize(), s.name.c_str());
  std::vector<double> ms;
  for (int r = 0; r < o.repeats; ++r) {
    float t = 0.0f;
    check(cudaEventElapsedTime(&t, start[size_t(r)], stop[size_t(r)]), "cudaEventElapsedTime");
    ms.push_back(t);
    cudaEventDestroy(start[size_t(r)]);
    cudaEventDestroy(stop[size_t(r)]);
  }
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  return n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const int rc = parse_options(argc, argv, o); rc != 0) return rc == 1 ? 0 : rc;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "castor_bench_cuda_gemm: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");

  void* workspace = nullptr;
  check(cudaMalloc(&workspace, kWorkspaceBytes), "cudaMalloc workspace");
  kc::GemmContext ctx;
  check(kc::make_gemm_context(&ctx, workspace, kWorkspaceBytes), "make_gemm_context");

  const std::vector<GemmSpec> specs = dense_m_gemms(o);
  size_t largest = 0;
  for (const GemmSpec& s : specs) largest = std::max({largest, s.a_elems(), s.b_elems()});
  const std::vector<bf16> values = host_values(largest);

  std::printf("device: %s; rows = %lld x %lld; bf16 inputs, fp32 compute; median of %d after %d warm-up\n", prop.name,
              static_cast<long long>(o.micro_batch), static_cast<long long>(o.seq_len), o.repeats, o.warmup);
  std::printf("%-14s %7s %7s %7s %4s %9s %9s\n", "gemm", "M", "N", "K", "out", "ms", "TFLOP/s");
  double table_flops = 0.0, table_ms = 0.0, step_flops = 0.0, step_ms = 0.0;
  for (const GemmSpec& s : specs) {
    const double ms = time_gemm(ctx, s, o, values);
    std::printf("%-14s %7lld %7lld %7lld %4s %9.3f %9.1f\n", s.name.c_str(), static_cast<long long>(s.M),
                static_cast<long long>(s.N), static_cast<long long>(s.K), s.c_float ? "f32" : "bf16", ms,
                s.flops() / (ms * 1e-3) / 1e12);
    table_flops += s.flops();
    table_ms += ms;
    step_flops += double(s.count) * s.flops();
    step_ms += double(s.count) * ms;
  }
  std::printf("each GEMM once: %.1f TFLOP/s (FLOP-weighted)\n", table_flops / (table_ms * 1e-3) / 1e12);
  std::printf("step ceiling (%lld layers + LM head): %.1f TFLOP/s FLOP-weighted, %.2f TFLOP in %.2f ms of GEMMs\n",
              static_cast<long long>(o.layers), step_flops / (step_ms * 1e-3) / 1e12, step_flops / 1e12, step_ms);

  check(kc::destroy_gemm_context(&ctx), "destroy_gemm_context");
  cudaFree(workspace);
  return 0;
}
