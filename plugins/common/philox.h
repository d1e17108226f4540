// Counter-based Philox4x32-10 (Salmon et al., SC'11; Random123's philox4x32 with 10
// rounds), written once for host and device.  Checked against the published
// Random123 known-answer vectors in tests/test_neg_host.py.
#pragma once

#include "hostDevice.h"

namespace trt_neg
{

struct Philox4
{
    uint32_t v[4];
};

TRTNEG_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo)
{
#if defined(__CUDA_ARCH__)
    lo = a * b;
    hi = __umulhi(a, b);
#else
    uint64_t const p = static_cast<uint64_t>(a) * b;
    lo = static_cast<uint32_t>(p);
    hi = static_cast<uint32_t>(p >> 32);
#endif
}

TRTNEG_HD Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1)
{
    constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
    constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
    for (int r = 0; r < 10; ++r)
    {
        if (r)
        {
            k0 += kW0;
            k1 += kW1;
        }
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo32(kM0, c.v[0], hi0, lo0);
        mulhilo32(kM1, c.v[2], hi1, lo1);
        Philox4 n;
        n.v[0] = hi1 ^ c.v[1] ^ k0;
        n.v[1] = lo1;
        n.v[2] = hi0 ^ c.v[3] ^ k1;
        n.v[3] = lo0;
        c = n;
    }
    return c;
}

// DESIGN.md s4: key = 64-bit seed (lo, hi), counter = (offset lo, offset hi, 0, 0),
// u = (x0 >> 8) * 2^-24 -- exact in fp32, in [0, 1).
TRTNEG_HD float philoxUniform(uint64_t seed, uint64_t offset)
{
    Philox4 c;
    c.v[0] = static_cast<uint32_t>(offset);
    c.v[1] = static_cast<uint32_t>(offset >> 32);
    c.v[2] = 0;
    c.v[3] = 0;
    Philox4 const r = philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    return static_cast<float>(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

} // namespace trt_neg
