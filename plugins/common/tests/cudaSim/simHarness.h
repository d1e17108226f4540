// Error reporting of the C ABI harnesses that run launchers on the CPU simulation of CUDA
// (plugins/*/tests/*KernelSim.cpp, one per library): simFail() records the message that
// trtneg_sim_last_error() hands to ctypes.
#pragma once

#include <string>

namespace cudasim
{

inline std::string& harnessError()
{
    static thread_local std::string message;
    return message;
}

// Returns the C ABI's failure code, 1.
inline int simFail(std::string message)
{
    harnessError() = std::move(message);
    return 1;
}

} // namespace cudasim

extern "C" char const* trtneg_sim_last_error()
{
    return cudasim::harnessError().c_str();
}
