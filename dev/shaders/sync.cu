// Kernels of the frame-synchronisation tests (tests/suite/sync.rs). Compiled at run time with
// NVRTC (vkcuda::cuda::Context::compile).

// Ordering proven by data: Vulkan filled `region` (n words) with `k` before this kernel may
// run, and Vulkan copies it only after this kernel is done. Counts the words that do not
// hold `k` into `*bad` (0 proves Vulkan -> CUDA order), then writes k + 1 to every word
// (what Vulkan must read back, proving CUDA -> Vulkan order).
extern "C" __global__ void bump(unsigned int *region, unsigned long long n, unsigned int k,
                                unsigned int *bad) {
    unsigned int wrong = 0;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        if (region[i] != k) wrong++;
        region[i] = k + 1;
    }
    if (wrong) atomicAdd(bad, wrong);
}

// Spins until the host writes `value` to `*flag` (page-locked host memory mapped into the
// device). Lets the benchmark start a host wait before the CUDA work it waits for has ended.
extern "C" __global__ void wait_flag(const volatile unsigned int *flag, unsigned int value) {
    while (*flag != value) {
    }
}

// The CUDA work of one frame in the sync bench: adds 1 to each of `n` words (a frame's worth
// of memory traffic, like the demo's tone map), so no hand-off is measured without a kernel.
extern "C" __global__ void touch(unsigned int *region, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        region[i] += 1;
    }
}
