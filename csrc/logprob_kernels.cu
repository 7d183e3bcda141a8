// Per-token and per-sequence reductions of the fused log-prob head (megatron_redi/ops/logprob.py).
//
// Each kernel has a PyTorch reference in megatron_redi/ops/logprob_kernels.py, with the same
// name and contract; tests/ops/test_logprob_cuda.py compares the two on a GPU.
//
//   row_stats(logits [c, V], local [c])            -> max [c], sum exp(x - max) [c], target logit [c]
//   dlogits(logits, lse [c], local, coeff [c], out) : out = coeff * (onehot(local) - exp(x - lse))
//                                                     (out may alias logits: in place)
//   segment_sum(values [t], index [t], n)          -> out[n] = sum of values with that index
//   wgrad_accumulate(acc [V, h] fp32, dlogits [c, V], h [c, h]) : acc += dlogits^T h, fp32 output
//
// logits are fp32, bf16 or fp16; every reduction is fp32. `local` is the target id shifted into
// this rank's vocab shard; outside [0, V) the target belongs to another rank and contributes 0.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublas_v2.h>
#include <torch/extension.h>

#include <cmath>

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

// Merge two (max, sum of exp(x - max)) summaries of disjoint sets.
__device__ __forceinline__ void merge_softmax_stats(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

template <typename T>
__global__ void row_stats_kernel(const T* __restrict__ logits, const int64_t* __restrict__ local,
                                 int64_t vocab, float* __restrict__ out_max,
                                 float* __restrict__ out_sum, float* __restrict__ out_target) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  float m = -INFINITY, s = 0.f;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float v = static_cast<float>(x[j]);
    if (v > m) {
      s = s * __expf(m - v) + 1.f;
      m = v;
    } else {
      s += __expf(v - m);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffff, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffff, s, offset);
    merge_softmax_stats(m, s, m2, s2);
  }
  __shared__ float warp_m[kWarps], warp_s[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_m[warp] = m;
    warp_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < kWarps ? warp_m[lane] : -INFINITY;
    s = lane < kWarps ? warp_s[lane] : 0.f;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffff, m, offset);
      const float s2 = __shfl_xor_sync(0xffffffff, s, offset);
      merge_softmax_stats(m, s, m2, s2);
    }
    if (lane == 0) {
      out_max[row] = m;
      out_sum[row] = s;
      const int64_t t = local[row];
      out_target[row] = (t >= 0 && t < vocab) ? static_cast<float>(x[t]) : 0.f;
    }
  }
}

template <typename Tin, typename Tout>
__global__ void dlogits_kernel(const Tin* logits, const float* __restrict__ lse,
                               const int64_t* __restrict__ local, const float* __restrict__ coeff,
                               Tout* out, int64_t vocab) {
  const int64_t row = blockIdx.x;
  const float l = lse[row], c = coeff[row];
  const int64_t t = local[row];
  const Tin* x = logits + row * vocab;
  Tout* y = out + row * vocab;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    float g = -c * __expf(static_cast<float>(x[j]) - l);
    if (j == t) g += c;
    y[j] = static_cast<Tout>(g);
  }
}

__global__ void segment_sum_kernel(const float* __restrict__ values, const int64_t* __restrict__ index,
                                   int64_t n, float* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) atomicAdd(out + index[i], values[i]);
}

void check_rows(const at::Tensor& logits, const at::Tensor& local) {
  TORCH_CHECK(logits.is_cuda() && logits.dim() == 2 && logits.is_contiguous(),
              "logits must be a contiguous 2-D CUDA tensor");
  TORCH_CHECK(local.is_cuda() && local.scalar_type() == at::kLong && local.dim() == 1 &&
                  local.size(0) == logits.size(0) && local.is_contiguous(),
              "local targets must be contiguous int64 [rows] on the logits' device");
}

template <typename Tin>
void launch_dlogits(const at::Tensor& logits, const at::Tensor& lse, const at::Tensor& local,
                    const at::Tensor& coeff, at::Tensor& out, cudaStream_t stream) {
  const auto rows = logits.size(0), vocab = logits.size(1);
  const Tin* x = logits.data_ptr<Tin>();
  switch (out.scalar_type()) {
    case at::kFloat:
      dlogits_kernel<Tin, float><<<rows, kThreads, 0, stream>>>(
          x, lse.data_ptr<float>(), local.data_ptr<int64_t>(), coeff.data_ptr<float>(), out.data_ptr<float>(), vocab);
      break;
    case at::kBFloat16:
      dlogits_kernel<Tin, at::BFloat16><<<rows, kThreads, 0, stream>>>(
          x, lse.data_ptr<float>(), local.data_ptr<int64_t>(), coeff.data_ptr<float>(),
          out.data_ptr<at::BFloat16>(), vocab);
      break;
    case at::kHalf:
      dlogits_kernel<Tin, at::Half><<<rows, kThreads, 0, stream>>>(
          x, lse.data_ptr<float>(), local.data_ptr<int64_t>(), coeff.data_ptr<float>(), out.data_ptr<at::Half>(), vocab);
      break;
    default:
      TORCH_CHECK(false, "dlogits: out must be float32, bfloat16 or float16");
  }
}

cudaDataType_t cublas_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CUDA_R_32F;
    case at::kBFloat16: return CUDA_R_16BF;
    case at::kHalf: return CUDA_R_16F;
    default: TORCH_CHECK(false, "wgrad_accumulate: unsupported dtype ", t);
  }
  return CUDA_R_32F;
}

}  // namespace

std::vector<at::Tensor> row_stats(const at::Tensor& logits, const at::Tensor& local) {
  check_rows(logits, local);
  const c10::cuda::CUDAGuard guard(logits.device());
  const auto rows = logits.size(0), vocab = logits.size(1);
  auto opts = logits.options().dtype(at::kFloat);
  auto row_max = at::empty({rows}, opts), row_sum = at::empty({rows}, opts), target = at::empty({rows}, opts);
  if (rows == 0) return {row_max, row_sum, target};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "row_stats", [&] {
    row_stats_kernel<scalar_t><<<rows, kThreads, 0, stream>>>(
        logits.data_ptr<scalar_t>(), local.data_ptr<int64_t>(), vocab, row_max.data_ptr<float>(),
        row_sum.data_ptr<float>(), target.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {row_max, row_sum, target};
}

at::Tensor dlogits(const at::Tensor& logits, const at::Tensor& lse, const at::Tensor& local,
                   const at::Tensor& coeff, at::Tensor out) {
  check_rows(logits, local);
  for (const auto* t : {&lse, &coeff}) {
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == at::kFloat && t->dim() == 1 &&
                    t->size(0) == logits.size(0) && t->is_contiguous(),
                "lse and coeff must be contiguous float32 [rows]");
  }
  TORCH_CHECK(out.is_cuda() && out.sizes() == logits.sizes() && out.is_contiguous(),
              "out must be a contiguous CUDA tensor shaped like logits");
  const c10::cuda::CUDAGuard guard(logits.device());
  if (logits.size(0) == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "dlogits", [&] {
    launch_dlogits<scalar_t>(logits, lse, local, coeff, out, stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor segment_sum(const at::Tensor& values, const at::Tensor& index, int64_t n) {
  TORCH_CHECK(values.is_cuda() && values.scalar_type() == at::kFloat && values.dim() == 1 && values.is_contiguous(),
              "segment_sum: values must be contiguous float32 [t] on CUDA");
  TORCH_CHECK(index.is_cuda() && index.scalar_type() == at::kLong && index.sizes() == values.sizes() &&
                  index.is_contiguous(),
              "segment_sum: index must be contiguous int64 shaped like values");
  const c10::cuda::CUDAGuard guard(values.device());
  auto out = at::zeros({n}, values.options());
  const int64_t t = values.size(0);
  if (t == 0) return out;
  const int threads = 256;
  const int64_t blocks = (t + threads - 1) / threads;
  segment_sum_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      values.data_ptr<float>(), index.data_ptr<int64_t>(), t, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// acc [V, h] fp32 += dlogits [c, V]^T @ h [c, h], one cuBLAS GEMM with an fp32 output and beta = 1,
// so the per-chunk weight gradient is never rounded to bf16 (Megatron's gradient-accumulation fusion).
void wgrad_accumulate(at::Tensor acc, const at::Tensor& dlogits, const at::Tensor& h) {
  TORCH_CHECK(acc.is_cuda() && acc.scalar_type() == at::kFloat && acc.is_contiguous() && acc.dim() == 2,
              "wgrad_accumulate: acc must be a contiguous float32 [V, h] CUDA tensor");
  TORCH_CHECK(dlogits.dim() == 2 && h.dim() == 2 && dlogits.size(0) == h.size(0) &&
                  dlogits.size(1) == acc.size(0) && h.size(1) == acc.size(1),
              "wgrad_accumulate: shapes must be acc [V, h], dlogits [c, V], h [c, h]");
  TORCH_CHECK(dlogits.scalar_type() == h.scalar_type() && dlogits.is_contiguous() && h.is_contiguous(),
              "wgrad_accumulate: dlogits and h must be contiguous and of one dtype");
  const c10::cuda::CUDAGuard guard(acc.device());
  const int64_t c = h.size(0), hidden = h.size(1), vocab = acc.size(0);
  if (c == 0) return;
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  TORCH_CUDABLAS_CHECK(cublasSetStream(handle, at::cuda::getCurrentCUDAStream()));
  const float alpha = 1.f, beta = 1.f;
  const auto type = cublas_type(h.scalar_type());
  // Column-major view: acc^T [h, V] = h^T [h, c] (h as stored, op N) x dlogits [c, V] (stored
  // as dlogits^T [V, c], op T).
  TORCH_CUDABLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, hidden, vocab, c, &alpha,
                                    h.data_ptr(), type, hidden, dlogits.data_ptr(), type, vocab, &beta,
                                    acc.data_ptr(), CUDA_R_32F, hidden, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "megatron_redi: reductions of the fused per-sequence log-prob head";
  m.def("row_stats", &row_stats, "per-row max, sum exp(x - max) and target logit (fp32)");
  m.def("dlogits", &dlogits, "out = coeff * (onehot - softmax), from the saved log-sum-exp");
  m.def("segment_sum", &segment_sum, "per-sequence sums of per-token values (fp32)");
  m.def("wgrad_accumulate", &wgrad_accumulate, "acc += dlogits^T h with an fp32 accumulator");
}
