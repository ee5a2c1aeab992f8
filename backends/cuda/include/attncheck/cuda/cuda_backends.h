/// \file cuda_backends.h
/// \brief Entry functions of the CUDA backends: each returns a new table (destroy() frees it).
///
/// Always built: cuda-naive@host and cuda-flash@host, the device kernels' source run on the host
/// through host_emulation.h; their table's device is the suite's simulated device
/// (kAttncheckSimulatedDevice), so the suite's device path runs without a GPU. Built with
/// ATTNCHECK_WITH_CUDA: cuda-naive, cuda-flash and cuda-cublas (CUDA memory, kDLCUDA; work is
/// enqueued on the call's stream); without a usable device their supports() and forward() answer
/// kAttncheckNotSupported with "no CUDA device: <cudaGetErrorString>". cuda-flash and
/// cuda-flash@host also have a backward pass (ABI 2.2, flash_attention_backward.cuh).
#ifndef ATTNCHECK_CUDA_BACKENDS_H_
#define ATTNCHECK_CUDA_BACKENDS_H_

#include "attncheck/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

attncheck_backend* attncheck_cuda_naive_host_entry(void);
attncheck_backend* attncheck_cuda_flash_host_entry(void);
attncheck_backend* attncheck_cuda_naive_entry(void);
attncheck_backend* attncheck_cuda_flash_entry(void);
attncheck_backend* attncheck_cuda_cublas_entry(void);

#ifdef __cplusplus
}
#endif

#endif  // ATTNCHECK_CUDA_BACKENDS_H_
