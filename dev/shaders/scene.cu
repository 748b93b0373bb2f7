// The demo scene (dev/shaders/render.wgsl) drawn by CUDA into rows at a pitch: the frame-sharing
// example's CUDA producer writes its frames with it. Integer arithmetic, texel for texel the
// same as the CPU twin `reference` in dev/src/scene.rs. Compiled at run time with NVRTC.

extern "C" __global__ void render_rows(unsigned char *rows, unsigned long long pitch,
                                       unsigned int frame, unsigned int width,
                                       unsigned int height) {
    unsigned int x = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= width || y >= height) return;
    int cx = (int)((frame * 7u) % width);
    int cy = (int)(height / 2u);
    int rad = (int)(height / 4u);
    int dx = (int)x - cx, dy = (int)y - cy;
    unsigned char r, g, b;
    if (dx * dx + dy * dy <= rad * rad) {
        r = 255; g = 224; b = 32;
    } else {
        unsigned int wm = width > 1u ? width - 1u : 1u;
        unsigned int hm = height > 1u ? height - 1u : 1u;
        r = (unsigned char)(x * 255u / wm);
        g = (unsigned char)(y * 255u / hm);
        b = 96;
    }
    unsigned char *p = rows + y * pitch + 4ull * x;
    p[0] = r; p[1] = g; p[2] = b; p[3] = 255;
}
