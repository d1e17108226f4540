// CPU simulation stand-in for <cuda_runtime.h> (see cudaSim.h).
#pragma once
#include "cuda_runtime_api.h"
