// CPU simulation stand-in for <cuda_runtime.h> (see cudaSim.h).
#pragma once
#include "cudaSim.h"
