// Torch extension binding of the Gated DeltaNet CUDA launcher (gdnKernel.h), used by the
// GPU check (python -m trt_neg.gpu_check) to compare the kernel with the CPU host library
// and to time it. Built by trt_neg/kernels/cuda_ext.py (load_gdn) with
// torch.utils.cpp_extension.load; no TensorRT.
// Only c10/cuda headers (the stream and the device guard): ATen/cuda/CUDAContext.h would
// pull in the cuBLAS/cuSPARSE/cuSOLVER headers, which a bare nvcc install may lack.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <string>
#include <vector>

#include "../common/torchBinding.h"
#include "gdnKernel.h"
#include "gdnParams.h"

namespace
{

void check(at::Tensor const& t, char const* name, at::ScalarType type, at::Device device)
{
    TORCH_CHECK(trt_neg::onKernelDevice(t), name, ": must be a ", trt_neg::kKernelDevice, " tensor");
    TORCH_CHECK(t.device() == device, name, ": must be on ", device, ", got ", t.device());
    TORCH_CHECK(t.is_contiguous(), name, ": must be contiguous");
    TORCH_CHECK(t.scalar_type() == type, name, ": expected dtype ", type, ", got ", t.scalar_type());
}

void checkNumel(at::Tensor const& t, char const* name, int64_t n)
{
    TORCH_CHECK(t.numel() == n, name, ": expected ", n, " elements, got ", t.numel());
}

// Runs the op; `state_pool` [num_slots, Hv, dk, dv] fp32 is updated in place. Returns out
// [T, Hv*dv] (packed) or [B, L, Hv*dv] (padded) in the dtype of qkv. The slot mapping stays on
// the device: a slot outside [0, num_slots) is skipped as padding (zero rows) by the kernel.
at::Tensor gdnForward(at::Tensor qkv, at::Tensor a, at::Tensor b, c10::optional<at::Tensor> z, at::Tensor aLog,
    at::Tensor dtBias, c10::optional<at::Tensor> normWeight, at::Tensor statePool,
    c10::optional<at::Tensor> slotMapping, at::Tensor lastTokenIds, std::vector<int64_t> requestTypes,
    int64_t numKHeads, int64_t numVHeads, int64_t headKDim, int64_t headVDim, double normEps, bool removePadding,
    bool continueContext, int64_t algo)
{
    TORCH_CHECK(algo >= 0 && algo <= 2, "algo: must be 0 (auto), 1 (scan) or 2 (chunked), got ", algo);
    TORCH_CHECK(trt_neg::onKernelDevice(qkv), "qkv: must be a ", trt_neg::kKernelDevice, " tensor");
    at::Device const dev = qkv.device();
    c10::cuda::CUDAGuard guard(dev);
    at::ScalarType const st = qkv.scalar_type();

    trt_neg::gdn::GdnParams p;
    p.shape.numKHeads = static_cast<int32_t>(numKHeads);
    p.shape.numVHeads = static_cast<int32_t>(numVHeads);
    p.shape.headKDim = static_cast<int32_t>(headKDim);
    p.shape.headVDim = static_cast<int32_t>(headVDim);
    p.dtype = trt_neg::dtypeOf(qkv, "qkv");
    p.normEps = static_cast<float>(normEps);
    p.removePadding = removePadding ? 1 : 0;
    p.continueContext = continueContext ? 1 : 0;
    TORCH_CHECK(numKHeads > 0 && numVHeads > 0 && headKDim > 0 && headVDim > 0, "head counts and dims must be > 0");

    int64_t const convDim = p.shape.convDim();
    int64_t const valueDim = p.shape.valueDim();
    check(qkv, "qkv", st, dev);
    TORCH_CHECK(qkv.dim() == (removePadding ? 2 : 3), "qkv: expected ", (removePadding ? 2 : 3), " dims, got ",
        qkv.dim());
    TORCH_CHECK(qkv.size(-1) == convDim, "qkv: last dim must be 2*Hk*dk + Hv*dv = ", convDim, ", got ", qkv.size(-1));
    int64_t const batch = static_cast<int64_t>(requestTypes.size());
    TORCH_CHECK(batch <= trt_neg::gdn::kMaxSeqsPerCall, "at most ", trt_neg::gdn::kMaxSeqsPerCall,
        " sequences per call, got ", batch);
    int64_t const numTokens = removePadding ? qkv.size(0) : qkv.size(0) * qkv.size(1);
    if (!removePadding)
    {
        TORCH_CHECK(qkv.size(0) == batch, "qkv: padded layout needs [B, L, C] with B = ", batch);
        p.maxSeqLen = static_cast<int32_t>(qkv.size(1));
    }
    p.batch = static_cast<int32_t>(batch);
    p.numTokens = numTokens;

    check(a, "a", st, dev);
    check(b, "b", st, dev);
    checkNumel(a, "a", numTokens * numVHeads);
    checkNumel(b, "b", numTokens * numVHeads);
    check(aLog, "A_log", at::kFloat, dev);
    check(dtBias, "dt_bias", at::kFloat, dev);
    checkNumel(aLog, "A_log", numVHeads);
    checkNumel(dtBias, "dt_bias", numVHeads);
    TORCH_CHECK(z.has_value() == normWeight.has_value(), "z and norm_weight go together");
    if (z)
    {
        check(*z, "z", st, dev);
        checkNumel(*z, "z", numTokens * valueDim);
        check(*normWeight, "norm_weight", at::kFloat, dev);
        checkNumel(*normWeight, "norm_weight", headVDim);
        p.z = z->data_ptr();
        p.normWeight = normWeight->data_ptr<float>();
    }
    check(statePool, "state_pool", at::kFloat, dev);
    TORCH_CHECK(statePool.dim() == 4 && statePool.size(1) == numVHeads && statePool.size(2) == headKDim
            && statePool.size(3) == headVDim,
        "state_pool: expected [num_slots, ", numVHeads, ", ", headKDim, ", ", headVDim, "], got ", statePool.sizes());
    // numSlots = 0 would mean "unknown" to the kernel (no bound on the slots): refuse it here.
    TORCH_CHECK(batch == 0 || statePool.size(0) > 0, "state_pool: no slots for ", batch, " sequences");
    p.numSlots = statePool.size(0);
    check(lastTokenIds, "last_token_ids", at::kInt, dev);
    checkNumel(lastTokenIds, "last_token_ids", batch);
    if (slotMapping)
    {
        check(*slotMapping, "slot_mapping", at::kInt, dev);
        checkNumel(*slotMapping, "slot_mapping", batch);
        p.slotMapping = slotMapping->data_ptr<int32_t>();
    }
    for (int64_t i = 0; i < batch; ++i)
    {
        int64_t const t = requestTypes[i];
        TORCH_CHECK(t == trt_neg::gdn::kCONTEXT || t == trt_neg::gdn::kGENERATION, "request_types[", i,
            "]: must be 0 (context) or 1 (generation), got ", t);
        trt_neg::gdn::setContext(p.contextMask, static_cast<int32_t>(i), t == trt_neg::gdn::kCONTEXT);
    }

    std::vector<int64_t> outShape(qkv.sizes().begin(), qkv.sizes().end());
    outShape.back() = valueDim;
    at::Tensor out = at::empty(outShape, qkv.options());

    p.qkv = qkv.data_ptr();
    p.a = a.data_ptr();
    p.b = b.data_ptr();
    p.aLog = aLog.data_ptr<float>();
    p.dtBias = dtBias.data_ptr<float>();
    p.statePool = statePool.data_ptr<float>();
    p.lastTokenIds = lastTokenIds.data_ptr<int32_t>();
    p.out = out.data_ptr();

    char const* const msg = trt_neg::gdn::validate(p);
    TORCH_CHECK(msg == nullptr, msg ? msg : "");
    cudaError_t const e = trt_neg::gdn::launch(
        p, c10::cuda::getCurrentCUDAStream(dev.index()).stream(), static_cast<trt_neg::gdn::ContextAlgo>(algo));
    TORCH_CHECK(e == cudaSuccess, "gdn launch failed: ", cudaGetErrorString(e));
    return out;
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("gdn_forward", &gdnForward, "Gated DeltaNet op (context + generation, paged fp32 state pool)",
        py::arg("qkv"), py::arg("a"), py::arg("b"), py::arg("z"), py::arg("a_log"), py::arg("dt_bias"),
        py::arg("norm_weight"), py::arg("state_pool"), py::arg("slot_mapping"), py::arg("last_token_ids"),
        py::arg("request_types"), py::arg("num_k_heads"), py::arg("num_v_heads"), py::arg("head_k_dim"),
        py::arg("head_v_dim"), py::arg("norm_eps"), py::arg("remove_padding"), py::arg("continue_context"),
        py::arg("algo") = 0);
    // The chunk size the launcher picks on the current device (0: scan only).
    m.def("chunk_size",
        [](int64_t hk, int64_t hv, int64_t dk, int64_t dv)
        {
            int device = 0;
            int maxOptin = 0;
            TORCH_CHECK(cudaGetDevice(&device) == cudaSuccess, "cudaGetDevice failed");
            cudaError_t const e = cudaDeviceGetAttribute(&maxOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
            TORCH_CHECK(e == cudaSuccess, "cudaDeviceGetAttribute failed");
            trt_neg::gdn::GdnShape s{static_cast<int32_t>(hk), static_cast<int32_t>(hv), static_cast<int32_t>(dk),
                static_cast<int32_t>(dv)};
            return static_cast<int64_t>(trt_neg::gdn::pickChunkSize(s, maxOptin));
        });
    m.def("shared_bytes",
        [](int64_t hk, int64_t hv, int64_t dk, int64_t dv)
        {
            trt_neg::gdn::GdnShape s{static_cast<int32_t>(hk), static_cast<int32_t>(hv), static_cast<int32_t>(dk),
                static_cast<int32_t>(dv)};
            return static_cast<int64_t>(trt_neg::gdn::kernelSharedBytes(s));
        });
}
