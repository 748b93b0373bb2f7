// Kernels over CUDA arrays (surfaces and textures), used by the image tests and benches.
// Compiled at run time with NVRTC, appended to buffer.cu (whose `pattern` is the test
// pattern shared with tests/suite/common.rs): compile `concat!(buffer.cu, image.cu)`.
//
// `kind` is the array's shape, as the tests pass it:
//   0: 2D   1: 2D layered   2: cube map   3: cube map array   4: 3D
// `w, h` are the level's extent and `d` its depth (3D) or layer count (others, 1 for 2D).
// Bytes of a level are laid out as Vulkan's staged copies lay them out: rows, then depth
// slices or layers, tightly packed.

#define KIND_2D 0
#define KIND_2D_LAYERED 1
#define KIND_CUBE 2
#define KIND_CUBE_LAYERED 3
#define KIND_3D 4

// ---------------------------------------------------------------------------------------
// Surfaces: raw element bytes, whatever the format (x coordinates are in bytes).
// ---------------------------------------------------------------------------------------

template <typename T>
__device__ void surf_store(cudaSurfaceObject_t s, int kind, T v, int x, int y, int z) {
    int xb = x * (int)sizeof(T);
    switch (kind) {
    case KIND_2D: surf2Dwrite<T>(v, s, xb, y); break;
    case KIND_2D_LAYERED: surf2DLayeredwrite<T>(v, s, xb, y, z); break;
    case KIND_CUBE: surfCubemapwrite<T>(v, s, xb, y, z); break;
    case KIND_CUBE_LAYERED: surfCubemapLayeredwrite<T>(v, s, xb, y, z); break;
    default: surf3Dwrite<T>(v, s, xb, y, z); break;
    }
}

// Little-endian word of 4 pattern bytes starting at byte index i.
__device__ __forceinline__ unsigned int pattern_word(unsigned long long i, unsigned int seed) {
    return (unsigned int)pattern(i, seed) | ((unsigned int)pattern(i + 1, seed) << 8) |
           ((unsigned int)pattern(i + 2, seed) << 16) | ((unsigned int)pattern(i + 3, seed) << 24);
}

// Writes the test pattern into every element of one level through a surface: byte b of
// element (x, y, z) is pattern(((z' * h + y) * w + x) * esize + b, seed) where, for layered
// kinds, z' = 0 and seed = seed0 + 10 * layer (each layer is its own pattern, as tests read
// them one layer at a time); for 3D z' = z and seed = seed0. `esize` is 1, 2, 4, 8 or 16.
extern "C" __global__ void surf_write_pattern(cudaSurfaceObject_t s, int kind, int esize, int w,
                                              int h, int d, unsigned int seed0) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z;
    if (x >= w || y >= h || z >= d) return;
    bool volume = kind == KIND_3D;
    unsigned int seed = volume ? seed0 : seed0 + 10u * (unsigned int)z;
    unsigned long long slice = volume ? (unsigned long long)z : 0ull;
    unsigned long long i = ((slice * h + y) * w + x) * (unsigned long long)esize;
    switch (esize) {
    case 1: surf_store<unsigned char>(s, kind, pattern(i, seed), x, y, z); break;
    case 2:
        surf_store<unsigned short>(
            s, kind, (unsigned short)(pattern(i, seed) | (pattern(i + 1, seed) << 8)), x, y, z);
        break;
    case 4: surf_store<unsigned int>(s, kind, pattern_word(i, seed), x, y, z); break;
    case 8:
        surf_store<uint2>(s, kind, make_uint2(pattern_word(i, seed), pattern_word(i + 4, seed)),
                          x, y, z);
        break;
    default:
        surf_store<uint4>(s, kind,
                          make_uint4(pattern_word(i, seed), pattern_word(i + 4, seed),
                                     pattern_word(i + 8, seed), pattern_word(i + 12, seed)),
                          x, y, z);
        break;
    }
}

// Writes `base + z` (32-bit) into every element of layer or slice z: the face/slice order
// test (R32_UINT).
extern "C" __global__ void surf_fill_index(cudaSurfaceObject_t s, int kind, int w, int h, int d,
                                           unsigned int base) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z;
    if (x >= w || y >= h || z >= d) return;
    surf_store<unsigned int>(s, kind, base + (unsigned int)z, x, y, z);
}

// ---------------------------------------------------------------------------------------
// Textures
// ---------------------------------------------------------------------------------------

// The direction that samples texel (u, v) (in [0, 1]) of cube face `face`
// (+X, -X, +Y, -Y, +Z, -Z), following the cube map selection table CUDA and Vulkan share.
__device__ float3 cube_direction(int face, float u, float v) {
    float s = 2.0f * u - 1.0f, t = 2.0f * v - 1.0f;
    switch (face) {
    case 0: return make_float3(1.0f, -t, -s);
    case 1: return make_float3(-1.0f, -t, s);
    case 2: return make_float3(s, 1.0f, t);
    case 3: return make_float3(s, -1.0f, -t);
    case 4: return make_float3(s, -t, 1.0f);
    default: return make_float3(-s, -t, -1.0f);
    }
}

// Samples element (x + ox, y + oy, z) of the level at `lod`: coordinates normalized when
// `normalized` (a whole-chain texture or a normalized per-level one), texel units otherwise.
// For cubes, z is the layer (face + 6 * cube) and ox, oy must keep the sample on the face.
template <typename T>
__device__ T tex_sample(cudaTextureObject_t t, int kind, int normalized, float lod, int w, int h,
                        int d, float fx, float fy, int z) {
    float u = normalized ? fx / w : fx;
    float v = normalized ? fy / h : fy;
    switch (kind) {
    case KIND_2D: return tex2DLod<T>(t, u, v, lod);
    case KIND_2D_LAYERED: return tex2DLayeredLod<T>(t, u, v, z, lod);
    case KIND_CUBE: {
        float3 dir = cube_direction(z, fx / w, fy / h);
        return texCubemapLod<T>(t, dir.x, dir.y, dir.z, lod);
    }
    case KIND_CUBE_LAYERED: {
        float3 dir = cube_direction(z % 6, fx / w, fy / h);
        return texCubemapLayeredLod<T>(t, dir.x, dir.y, dir.z, z / 6, lod);
    }
    default: {
        float zz = z + 0.5f;
        return tex3DLod<T>(t, u, v, normalized ? zz / d : zz, lod);
    }
    }
}

__device__ __forceinline__ unsigned short float_to_half_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Reads every element of one level through a texture at texel centres (point filtering)
// and stores its raw bytes, laid out as the level's bytes, into `out`:
//   mode 0: integer channels (read as integers), `cbytes` low bytes of each channel;
//   mode 1: float channels, as 2-byte halves (`cbytes` 2) or 4-byte floats;
//   mode 2: UNORM 10:10:10:2, repacked from the normalized floats.
extern "C" __global__ void tex_read_raw(cudaTextureObject_t t, int kind, int normalized,
                                        float lod, int w, int h, int d, int mode, int channels,
                                        int cbytes, unsigned char *out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z;
    if (x >= w || y >= h || z >= d) return;
    float fx = x + 0.5f, fy = y + 0.5f;
    unsigned int c[4];
    if (mode == 0) {
        uint4 v = tex_sample<uint4>(t, kind, normalized, lod, w, h, d, fx, fy, z);
        c[0] = v.x; c[1] = v.y; c[2] = v.z; c[3] = v.w;
    } else {
        float4 v = tex_sample<float4>(t, kind, normalized, lod, w, h, d, fx, fy, z);
        float f[4] = {v.x, v.y, v.z, v.w};
        for (int k = 0; k < 4; k++) {
            c[k] = cbytes == 2 ? float_to_half_bits(f[k]) : __float_as_uint(f[k]);
        }
        if (mode == 2) {
            unsigned int r = (unsigned int)rintf(f[0] * 1023.0f);
            unsigned int g = (unsigned int)rintf(f[1] * 1023.0f);
            unsigned int b = (unsigned int)rintf(f[2] * 1023.0f);
            unsigned int a = (unsigned int)rintf(f[3] * 3.0f);
            c[0] = r | (g << 10) | (b << 20) | (a << 30);
            channels = 1;
            cbytes = 4;
        }
    }
    int esize = channels * cbytes;
    unsigned long long at = (((unsigned long long)z * h + y) * w + x) * esize;
    for (int k = 0; k < channels; k++) {
        for (int b = 0; b < cbytes; b++) {
            out[at + k * cbytes + b] = (unsigned char)(c[k] >> (8 * b));
        }
    }
}

// Samples every element of one 2D or 2D layered level at (x + ox, y + oy) with the
// texture's filtering, into float4s laid out as the level's elements.
extern "C" __global__ void tex_sample_float(cudaTextureObject_t t, int kind, int normalized,
                                            float lod, int w, int h, int d, float ox, float oy,
                                            float4 *out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z;
    if (x >= w || y >= h || z >= d) return;
    out[((unsigned long long)z * h + y) * w + x] =
        tex_sample<float4>(t, kind, normalized, lod, w, h, d, x + ox, y + oy, z);
}

// Samples the centre of each face of cube `cube` along the axis directions
// +X, -X, +Y, -Y, +Z, -Z (in that order) from a 32-bit integer cube map (array).
extern "C" __global__ void tex_cube_axes(cudaTextureObject_t t, int layered, int cube,
                                         unsigned int *out) {
    int face = threadIdx.x;
    if (face >= 6) return;
    float3 dir = cube_direction(face, 0.5f, 0.5f);
    uint4 v = layered ? texCubemapLayered<uint4>(t, dir.x, dir.y, dir.z, cube)
                      : texCubemap<uint4>(t, dir.x, dir.y, dir.z);
    out[face] = v.x;
}

// ---------------------------------------------------------------------------------------
// Benchmark kernel: read a texel, scale it, write it back, through one surface.
// ---------------------------------------------------------------------------------------

__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// RGBA8 (format 0) or RGBA16F (format 1), 2D, in place: every channel times `scale`.
extern "C" __global__ void surf_scale_rgba(cudaSurfaceObject_t s, int format, int w, int h,
                                           float scale) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    if (format == 0) {
        uchar4 v = surf2Dread<uchar4>(s, x * 4, y);
        v.x = (unsigned char)fminf(v.x * scale, 255.0f);
        v.y = (unsigned char)fminf(v.y * scale, 255.0f);
        v.z = (unsigned char)fminf(v.z * scale, 255.0f);
        v.w = (unsigned char)fminf(v.w * scale, 255.0f);
        surf2Dwrite<uchar4>(v, s, x * 4, y);
    } else {
        ushort4 v = surf2Dread<ushort4>(s, x * 8, y);
        v.x = float_to_half_bits(half_bits_to_float(v.x) * scale);
        v.y = float_to_half_bits(half_bits_to_float(v.y) * scale);
        v.z = float_to_half_bits(half_bits_to_float(v.z) * scale);
        v.w = float_to_half_bits(half_bits_to_float(v.w) * scale);
        surf2Dwrite<ushort4>(v, s, x * 8, y);
    }
}
