// The Gated DeltaNet torch extension -- gdnTorch.cpp, the binding the GPU check loads on a GPU
// -- built over gdnKernel.cu on the CPU simulation of CUDA: a real extension module whose
// tensors are CPU tensors (tests/_sim_extensions.py).  One translation unit.
#include "../gdnTorch.cpp"
#include "../gdnKernel.cu"

#include "../../common/tests/cudaSim/simControl.h"
