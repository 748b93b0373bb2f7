// The demo's CUDA post-process, run in place on the shared RGBA8 image through a surface
// object: a tone curve v' = v * (255 + K) / (v + K) on each colour channel (alpha kept).
// Integer arithmetic, so dev/src/scene.rs can recompute every texel exactly.
// Compiled at run time with NVRTC.

#define K 64u

__device__ __forceinline__ unsigned char curve(unsigned char v) {
    return (unsigned char)(((unsigned int)v * (255u + K)) / ((unsigned int)v + K));
}

extern "C" __global__ void tonemap(cudaSurfaceObject_t surface, unsigned int width,
                                   unsigned int height) {
    unsigned int x = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    uchar4 c = surf2Dread<uchar4>(surface, (int)(x * 4), (int)y);
    c.x = curve(c.x);
    c.y = curve(c.y);
    c.z = curve(c.z);
    surf2Dwrite<uchar4>(c, surface, (int)(x * 4), (int)y);
}
