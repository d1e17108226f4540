// The NEG torch extension -- negTorch.cpp, the binding the GPU check and the reference backend
// load on a GPU -- built over negKernel.cu on the CPU simulation of CUDA: a real extension
// module whose tensors are CPU tensors (tests/_sim_extensions.py).  One translation unit.
#include "../negTorch.cpp"
#include "../negKernel.cu"

#include "../../common/tests/cudaSim/simControl.h"
