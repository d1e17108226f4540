// CPU simulation stand-in for <cuda_runtime_api.h> (see cudaSim.h; the memory API is in simDevice.h).
#pragma once
#include "cudaSim.h"
#include "simDevice.h"
