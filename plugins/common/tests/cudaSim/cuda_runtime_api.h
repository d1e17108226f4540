// CPU simulation stand-in for <cuda_runtime_api.h> (see cudaSim.h).
#pragma once
#include "cudaSim.h"
