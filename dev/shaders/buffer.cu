// Kernels over plain byte buffers, used by the buffer tests, benches and examples.
// Compiled at run time with NVRTC (vkcuda::cuda::Context::compile).

// The test pattern: byte i of a buffer filled with `seed`. Must match tests/suite/common.rs.
__device__ __forceinline__ unsigned char pattern(unsigned long long i, unsigned int seed) {
    return (unsigned char)(((unsigned int)i * 2654435761u + seed) >> 24);
}

extern "C" __global__ void fill_pattern(unsigned char *p, unsigned long long n, unsigned int seed) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        p[i] = pattern(i, seed);
    }
}

// Counts bytes that differ from the pattern; `first` receives the lowest bad index.
extern "C" __global__ void check_pattern(const unsigned char *p, unsigned long long n,
                                         unsigned int seed, unsigned long long *mismatches,
                                         unsigned long long *first) {
    unsigned long long bad = 0;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        if (p[i] != pattern(i, seed)) {
            bad++;
            atomicMin(first, i);
        }
    }
    if (bad) atomicAdd(mismatches, bad);
}

// A bandwidth-bound kernel for the benchmarks: y[i] = a * x[i] + y[i] over floats, vectorised.
extern "C" __global__ void saxpy4(const float4 *x, float4 *y, unsigned long long n4, float a) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n4;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        float4 xv = x[i], yv = y[i];
        yv.x = a * xv.x + yv.x;
        yv.y = a * xv.y + yv.y;
        yv.z = a * xv.z + yv.z;
        yv.w = a * xv.w + yv.w;
        y[i] = yv;
    }
}

// The pattern into `rows` rows of `row_bytes` bytes at `pitch` (a LINEAR image as CUDA sees
// it): byte x of row y gets pattern(y * row_bytes + x, seed), so the rows read back tightly
// packed are the plain pattern. Padding between rows is left alone.
extern "C" __global__ void fill_pitched_pattern(unsigned char *p, unsigned long long pitch,
                                                unsigned long long row_bytes, unsigned int rows,
                                                unsigned int seed) {
    unsigned long long n = row_bytes * rows;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long y = i / row_bytes, x = i % row_bytes;
        p[y * pitch + x] = pattern(i, seed);
    }
}
