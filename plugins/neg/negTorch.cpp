// Torch extension binding of the fused NEG CUDA op (built by
// trt_neg/kernels/cuda_ext.py with torch.utils.cpp_extension.load).
// c10's stream header, not ATen/cuda/CUDAContext.h: the latter pulls in cuBLAS/cuSPARSE headers
// that a bare CUDA toolkit may lack.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "../common/torchBinding.h"
#include "negKernel.h"

namespace
{

void checkTensor(at::Tensor const& t, char const* name, at::ScalarType type, int64_t dim)
{
    TORCH_CHECK(trt_neg::onKernelDevice(t), name, ": must be a ", trt_neg::kKernelDevice, " tensor");
    TORCH_CHECK(t.is_contiguous(), name, ": must be contiguous");
    TORCH_CHECK(t.scalar_type() == type, name, ": expected dtype ", type, ", got ", t.scalar_type());
    TORCH_CHECK(dim < 0 || t.dim() == dim, name, ": expected ", dim, " dims, got ", t.dim());
}

// Returns [token int32 [N], entropy fp32 [N], fired int32 [N], status int32 [N], guided fp32 [N,V] or empty].
std::vector<at::Tensor> negStep(c10::optional<at::Tensor> hidden, c10::optional<at::Tensor> logits,
    c10::optional<at::Tensor> w1, c10::optional<at::Tensor> b1, c10::optional<at::Tensor> w2,
    c10::optional<at::Tensor> b2, at::Tensor tau, at::Tensor seeds, at::Tensor offsets,
    c10::optional<at::Tensor> entropyIn, int64_t activation, int64_t topK, double temperature, bool withGuided,
    int64_t splits, int64_t headAlgo)
{
    trt_neg::NegStepParams p;
    TORCH_CHECK(entropyIn || hidden, "neg_step: give hidden (with w1, b1, w2, b2) or entropy_in");
    at::Tensor ref = entropyIn ? *entropyIn : *hidden;
    // Before the guard, which refuses a non-CUDA device with a message of its own.
    TORCH_CHECK(trt_neg::onKernelDevice(ref), entropyIn ? "entropy_in" : "hidden", ": must be a ",
        trt_neg::kKernelDevice, " tensor");
    c10::cuda::CUDAGuard guard(ref.device());
    // Every tensor on ref's GPU: the kernel dereferences them all on that device.
    auto const onRefDevice = [&ref](c10::optional<at::Tensor> const& t, char const* name)
    { TORCH_CHECK(!t || t->device() == ref.device(), name, ": must be on ", ref.device(), ", got ", t->device()); };
    onRefDevice(logits, "logits");
    onRefDevice(w1, "w1");
    onRefDevice(b1, "b1");
    onRefDevice(w2, "w2");
    onRefDevice(b2, "b2");
    onRefDevice(tau, "tau");
    onRefDevice(seeds, "seeds");
    onRefDevice(offsets, "offsets");
    TORCH_CHECK(tau.numel() >= 1, "tau: expected the gate threshold (1 element), got an empty tensor");
    int64_t const N = ref.size(0);
    p.N = static_cast<int32_t>(N);
    p.activation = static_cast<int32_t>(activation);
    p.topK = static_cast<int32_t>(topK);
    p.temperature = static_cast<float>(temperature);
    TORCH_CHECK(splits >= 0 && splits <= 1 << 20, "splits: expected 0 (automatic) or a slice count, got ", splits);
    p.splits = static_cast<int32_t>(splits);
    TORCH_CHECK(headAlgo == trt_neg::kNEG_HEAD_GEMV || headAlgo == trt_neg::kNEG_HEAD_MMA,
        "head_algo: expected 0 (GEMV) or 1 (tensor cores), got ", headAlgo);
    p.headAlgo = static_cast<int32_t>(headAlgo);
    checkTensor(tau, "tau", at::kFloat, -1);
    p.tau = tau.data_ptr<float>();
    if (entropyIn)
    {
        checkTensor(*entropyIn, "entropy_in", at::kFloat, 1);
        p.entropyIn = entropyIn->data_ptr<float>();
    }
    else
    {
        TORCH_CHECK(hidden && w1 && b1 && w2 && b2, "hidden, w1, b1, w2, b2 are required without entropy_in");
        p.hiddenType = trt_neg::dtypeOf(*hidden, "hidden");
        checkTensor(*hidden, "hidden", hidden->scalar_type(), 2);
        checkTensor(*w1, "w1", hidden->scalar_type(), 2);
        checkTensor(*b1, "b1", at::kFloat, 1);
        checkTensor(*w2, "w2", at::kFloat, 1);
        checkTensor(*b2, "b2", at::kFloat, -1);
        TORCH_CHECK(b2->numel() == 1, "b2: expected the head's output bias (1 element), got ", b2->numel(),
            " elements");
        TORCH_CHECK(w1->size(1) == hidden->size(1), "w1: columns must equal hidden size");
        p.H = static_cast<int32_t>(hidden->size(1));
        p.d = static_cast<int32_t>(w1->size(0));
        TORCH_CHECK(b1->numel() == p.d && w2->numel() == p.d, "b1/w2: expected ", p.d, " elements");
        p.hidden = hidden->data_ptr();
        p.w1 = w1->data_ptr();
        p.b1 = b1->data_ptr<float>();
        p.w2 = w2->data_ptr<float>();
        p.b2 = b2->data_ptr<float>();
    }
    auto i32 = ref.options().dtype(at::kInt);
    auto f32 = ref.options().dtype(at::kFloat);
    at::Tensor token = at::empty({N}, i32);
    at::Tensor entropy = at::empty({N}, f32);
    at::Tensor fired = at::empty({N}, i32);
    at::Tensor status = at::empty({N}, i32);
    at::Tensor guided;
    if (logits)
    {
        checkTensor(*logits, "logits", at::kFloat, 2);
        TORCH_CHECK(logits->size(0) == N, "logits: expected ", N, " rows");
        p.V = static_cast<int32_t>(logits->size(1));
        p.logits = logits->data_ptr<float>();
        checkTensor(seeds, "seeds", at::kLong, 1);
        checkTensor(offsets, "offsets", at::kLong, 1);
        TORCH_CHECK(seeds.numel() == N && offsets.numel() == N, "seeds/offsets: expected ", N, " elements");
        p.seeds = seeds.data_ptr<int64_t>();
        p.offsets64 = offsets.data_ptr<int64_t>();
        if (withGuided)
        {
            guided = at::empty({N, p.V}, f32);
            p.guided = guided.data_ptr<float>();
        }
    }
    p.token = token.data_ptr<int32_t>();
    p.entropy = entropy.data_ptr<float>();
    p.fired = fired.data_ptr<int32_t>();
    p.status = status.data_ptr<int32_t>();
    size_t const wsBytes = trt_neg::negStepWorkspaceSize(N, entropyIn ? 0 : p.d, logits ? p.V : 0, p.topK, p.splits);
    at::Tensor ws = at::empty({static_cast<int64_t>(wsBytes > 0 ? wsBytes : 1)}, ref.options().dtype(at::kByte));
    cudaError_t const e = trt_neg::negStepLaunch(p, ws.data_ptr(), ws.numel(), c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(e == cudaSuccess, "negStepLaunch failed: ", cudaGetErrorString(e));
    return {token, entropy, fired, status, guided};
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("neg_step", &negStep, "Fused NEG step (head + gate + gated top-k sampling + guided logits)",
        py::arg("hidden"), py::arg("logits"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"),
        py::arg("tau"), py::arg("seeds"), py::arg("offsets"), py::arg("entropy_in"), py::arg("activation"),
        py::arg("top_k"), py::arg("temperature"), py::arg("with_guided"), py::arg("splits") = 0,
        py::arg("head_algo") = 0);
}
