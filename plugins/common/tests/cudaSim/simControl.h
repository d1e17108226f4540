// A C ABI over the simulation's configuration, for libraries that are not harnesses: the torch
// extension bindings built on the simulation (plugins/*/tests/*TorchSim.cpp), whose Python
// callers reach these through ctypes on the same shared object (tests/_sim_extensions.py).
#pragma once

#include "cudaSim.h"

extern "C"
{

// cudasim::configure: a fresh simulated device for the next launches (`order`: cudasim::Order).
void trtneg_sim_configure(int32_t order, uint32_t shuffleSeed, int32_t smMajor, int32_t smMinor, int32_t maxSharedOptin)
{
    cudasim::configure(static_cast<cudasim::Order>(order), shuffleSeed, smMajor, smMinor, maxSharedOptin);
}

// What the simulation saw for the latest error (a fault's place and cause), "" if none: the
// bindings report only cudaGetErrorString's name.
char const* trtneg_sim_error_message()
{
    return cudasim::lastError().message.c_str();
}

// Kernel launches since the last trtneg_sim_configure.
int32_t trtneg_sim_launches()
{
    return cudasim::lastLaunch().launches;
}

} // extern "C"
