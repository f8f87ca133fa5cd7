// Host emulation (see emulation.h): stands in for the CUDA header of this name.
#pragma once
#include "emulation.h"
