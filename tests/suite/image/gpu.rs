//! GPU image tests: Vulkan images shared with CUDA as mipmapped arrays, with zero copies.
//! They need a CUDA device with the Vulkan device's UUID; without one they are reported
//! ignored.
//!
//! * `surface_write/FORMAT`: a CUDA kernel writes a per-texel byte pattern into every level
//!   and layer through surface objects; Vulkan reads it back (`vkCmdCopyImageToBuffer`)
//!   equal to the CPU reference. One trial per shareable non-BC format that the driver
//!   allows as a `STORAGE` image; formats it refuses are listed as skipped, with the reason.
//! * `texture_read/FORMAT`: Vulkan writes the pattern (`vkCmdCopyBufferToImage`); a CUDA
//!   kernel reads every level and layer through a point-sampled texture, over the whole mip
//!   chain and per level, equal to the data. One trial per shareable non-BC format the
//!   driver allows as a `SAMPLED` image.
//! * Linear filtering against a CPU bilinear reference, cube faces and 3D slices in order,
//!   drop order, typed errors, and a create/import/drop loop with flat fds and memory.
//!
//! Every trial ends by checking that the validation layer (when enabled) reported nothing.

use crate::common;

use std::sync::Arc;

use anyhow::ensure;
use common::{assert_bytes, assert_no_validation_errors, open_fds, pattern_bytes, trial};
use cudarc::driver::sys::{CUaddress_mode, CUarray_format, CUfilter_mode};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use libtest_mimic::Trial;
use vkcuda::ash::vk;
use vkcuda::cuda::{self, SurfaceObject, TextureDesc, TextureObject};
use vkcuda::interop::{format::shareable_formats, SharedImage};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, texel_block, ImageDesc, ImageKind};

const KERNELS: &str = vkcuda_dev::shaders::IMAGE_CU;

type Env = (vulkan::Context, cuda::Context);

/// Usage of the images CUDA writes through surfaces.
const STORAGE: vk::ImageUsageFlags = vk::ImageUsageFlags::from_raw(
    vk::ImageUsageFlags::STORAGE.as_raw()
        | vk::ImageUsageFlags::TRANSFER_SRC.as_raw()
        | vk::ImageUsageFlags::TRANSFER_DST.as_raw(),
);

/// Usage of the images CUDA reads through textures.
const SAMPLED: vk::ImageUsageFlags = vk::ImageUsageFlags::from_raw(
    vk::ImageUsageFlags::SAMPLED.as_raw()
        | vk::ImageUsageFlags::TRANSFER_SRC.as_raw()
        | vk::ImageUsageFlags::TRANSFER_DST.as_raw(),
);

/// Formats left out, and why: using them at all would be invalid Vulkan usage on a context
/// that does not enable their extension, and the validation layer would say so.
fn excluded(format: vk::Format) -> Option<&'static str> {
    (format == vk::Format::A8_UNORM_KHR).then_some(
        "needs VK_KHR_maintenance5 (core in Vulkan 1.4), which the context does not enable; \
         even querying it is invalid (VUID-VkPhysicalDeviceImageFormatInfo2-format-parameter)",
    )
}

/// Whether Vulkan requires a sampler Y'CbCr conversion for `format`: then images are 2D with
/// one level and one layer (VUID-VkImageCreateInfo-format-06410 and its siblings).
fn needs_ycbcr_conversion(format: vk::Format) -> bool {
    matches!(
        format,
        vk::Format::R10X6G10X6B10X6A10X6_UNORM_4PACK16
            | vk::Format::R12X4G12X4B12X4A12X4_UNORM_4PACK16
    )
}

/// 2D and 3D (depth 4) with mips, 2D array of 3, cube and cube array of 2 with one level
/// (vkcuda refuses layered images with mips: see `cuda_array_desc`); extents are not powers
/// of two so levels are uneven. Formats that need a Y'CbCr conversion get the one
/// 2D shape Vulkan allows them.
fn shapes(format: vk::Format, usage: vk::ImageUsageFlags) -> Vec<ImageDesc> {
    let all = if needs_ycbcr_conversion(format) {
        vec![ImageDesc::d2(37, 19, format)]
    } else {
        vec![
            ImageDesc::d2(37, 19, format).mips(3),
            ImageDesc::d2_array(24, 17, 3, format),
            ImageDesc::cube(16, format),
            ImageDesc::cube_array(8, 2, format),
            ImageDesc::d3(21, 11, 4, format).mips(3),
        ]
    };
    all.into_iter().map(|d| d.usage(usage)).collect()
}

fn describe(desc: &ImageDesc) -> String {
    let e = desc.extent;
    format!(
        "{:?} {:?} {}x{}x{} layers {} mips {}",
        desc.format, desc.kind, e.width, e.height, e.depth, desc.layers, desc.mip_levels
    )
}

/// The shape code the kernels of `dev/shaders/image.cu` take.
fn kind_code(kind: ImageKind) -> i32 {
    match kind {
        ImageKind::D2 => 0,
        ImageKind::D2Array => 1,
        ImageKind::Cube => 2,
        ImageKind::CubeArray => 3,
        _ => 4,
    }
}

/// `(width, height, depth or layers)` of `level`.
fn level_dims(desc: &ImageDesc, level: u32) -> (u32, u32, u32) {
    let e = desc.level_extent(level);
    let d = if desc.kind == ImageKind::D3 {
        e.depth
    } else {
        desc.layers
    };
    (e.width, e.height, d)
}

/// Bytes of one layer of `level` (all slices of a 3D level).
fn layer_bytes(desc: &ImageDesc, level: u32) -> u64 {
    let texel = texel_block(desc.format).expect("non-BC shareable formats have a texel size");
    let e = desc.level_extent(level);
    u64::from(texel.bytes) * u64::from(e.width) * u64::from(e.height) * u64::from(e.depth)
}

/// The pattern seed of `layer` of `level` (the kernel's `seed0 + 10 * layer`).
fn seed(level: u32, layer: u32, pass: u32) -> u32 {
    level * 1_000 + pass + 10 * layer
}

/// One thread per element of a level: 16 x 16 blocks, one grid layer per layer or slice.
fn grid((w, h, d): (u32, u32, u32)) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (w.div_ceil(16), h.div_ceil(16), d),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    }
}

fn as_i32(v: u32) -> i32 {
    i32::try_from(v).expect("test extents fit an int")
}

/// How `tex_read_raw` turns a texel back into bytes, by CUDA format:
/// `(mode, bytes per channel, read as integer)`.
fn raw_mode(format: CUarray_format, element_bytes: u32, channels: u32) -> (i32, i32, bool) {
    let per_channel = as_i32(element_bytes / channels);
    match format {
        CUarray_format::CU_AD_FORMAT_HALF | CUarray_format::CU_AD_FORMAT_FLOAT => {
            (1, per_channel, false)
        }
        CUarray_format::CU_AD_FORMAT_UNORM_INT_101010_2 => (2, 4, false),
        _ => (0, per_channel, true),
    }
}

/// Makes every float channel of `data` a finite normal number (the texture unit converts
/// halves to floats, and NaN payloads or denormals need not survive that), so texture reads
/// can be compared bit for bit.
fn sanitize_floats(data: &mut [u8], channel_bytes: usize) {
    for channel in data.chunks_exact_mut(channel_bytes) {
        let top = channel_bytes - 1;
        if channel_bytes == 2 {
            // Half: exponent bits 10..=14; clear bit 14, set bit 10.
            channel[1] = (channel[1] & !0x40) | 0x04;
        } else {
            // Float: exponent bits 23..=30; clear bit 30, set bit 23.
            channel[top] &= !0x40;
            channel[top - 1] |= 0x80;
        }
    }
}

struct Kernels {
    stream: Arc<CudaStream>,
    write_pattern: CudaFunction,
    fill_index: CudaFunction,
    read_raw: CudaFunction,
    sample_float: CudaFunction,
    cube_axes: CudaFunction,
}

impl Kernels {
    fn new(cu: &cuda::Context) -> anyhow::Result<Self> {
        let module = cu.compile("image.cu", KERNELS)?;
        Ok(Self {
            stream: cu.new_stream()?,
            write_pattern: module.load_function("surf_write_pattern")?,
            fill_index: module.load_function("surf_fill_index")?,
            read_raw: module.load_function("tex_read_raw")?,
            sample_float: module.load_function("tex_sample_float")?,
            cube_axes: module.load_function("tex_cube_axes")?,
        })
    }

    /// The pattern of `seed0` into every element of `level` through `surf`.
    fn write_pattern(
        &self,
        surf: &SurfaceObject,
        desc: &ImageDesc,
        level: u32,
        seed0: u32,
    ) -> anyhow::Result<()> {
        let dims = level_dims(desc, level);
        let esize = as_i32(texel_block(desc.format).expect("texel size").bytes);
        let (kind, w, h, d) = (
            kind_code(desc.kind),
            as_i32(dims.0),
            as_i32(dims.1),
            as_i32(dims.2),
        );
        let mut l = self.stream.launch_builder(&self.write_pattern);
        l.arg(surf).arg(&kind).arg(&esize);
        l.arg(&w).arg(&h).arg(&d).arg(&seed0);
        // SAFETY: surf_write_pattern(surface, int x5, uint) writes elements inside the level
        // the live surface names, one element of `esize` bytes each.
        unsafe { l.launch(grid(dims)) }?;
        Ok(())
    }

    /// `base + layer` (or slice) into every element of `level` (32-bit formats).
    fn fill_index(
        &self,
        surf: &SurfaceObject,
        desc: &ImageDesc,
        level: u32,
        base: u32,
    ) -> anyhow::Result<()> {
        let dims = level_dims(desc, level);
        let (kind, w, h, d) = (
            kind_code(desc.kind),
            as_i32(dims.0),
            as_i32(dims.1),
            as_i32(dims.2),
        );
        let mut l = self.stream.launch_builder(&self.fill_index);
        l.arg(surf).arg(&kind).arg(&w).arg(&h).arg(&d).arg(&base);
        // SAFETY: surf_fill_index(surface, int x4, uint) writes 4-byte elements inside the
        // level the live surface names.
        unsafe { l.launch(grid(dims)) }?;
        Ok(())
    }

    /// Every element of `level` read through `tex` at texel centres, as bytes.
    fn read_raw(
        &self,
        tex: &TextureObject,
        desc: &ImageDesc,
        level: u32,
        normalized: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let array = tex.array().desc();
        let esize = array.element_bytes().expect("non-BC element size");
        let (mode, channel_bytes, _) = raw_mode(array.format, esize, array.channels);
        let dims = level_dims(desc, level);
        let len = u64::from(esize) * u64::from(dims.0 * dims.1 * dims.2);
        let mut out = self.stream.alloc_zeros::<u8>(len as usize)?;
        let lod = if tex.level().is_some() {
            0.0f32
        } else {
            level as f32
        };
        let (kind, norm, w, h, d) = (
            kind_code(desc.kind),
            i32::from(normalized),
            as_i32(dims.0),
            as_i32(dims.1),
            as_i32(dims.2),
        );
        let channels = as_i32(array.channels);
        let mut l = self.stream.launch_builder(&self.read_raw);
        l.arg(tex).arg(&kind).arg(&norm).arg(&lod);
        l.arg(&w).arg(&h).arg(&d);
        l.arg(&mode)
            .arg(&channels)
            .arg(&channel_bytes)
            .arg(&mut out);
        // SAFETY: tex_read_raw reads the live texture and writes w*h*d elements of
        // `esize` bytes into `out`, which holds exactly that many.
        unsafe { l.launch(grid(dims)) }?;
        Ok(self.stream.clone_dtoh(&out)?)
    }

    /// Every element of a 2D (array) `level` sampled at `(x + ox, y + oy)`, as float4s.
    fn sample_float(
        &self,
        tex: &TextureObject,
        desc: &ImageDesc,
        level: u32,
        (ox, oy): (f32, f32),
    ) -> anyhow::Result<Vec<[f32; 4]>> {
        let dims = level_dims(desc, level);
        let n = (dims.0 * dims.1 * dims.2) as usize;
        let mut out = self.stream.alloc_zeros::<f32>(4 * n)?;
        let (kind, norm, lod) = (kind_code(desc.kind), 1i32, level as f32);
        let (w, h, d) = (as_i32(dims.0), as_i32(dims.1), as_i32(dims.2));
        let mut l = self.stream.launch_builder(&self.sample_float);
        l.arg(tex).arg(&kind).arg(&norm).arg(&lod);
        l.arg(&w).arg(&h).arg(&d).arg(&ox).arg(&oy).arg(&mut out);
        // SAFETY: tex_sample_float reads the live texture and writes w*h*d float4s into
        // `out`, which holds exactly that many.
        unsafe { l.launch(grid(dims)) }?;
        let flat = self.stream.clone_dtoh(&out)?;
        Ok(flat
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    }

    /// What a 32-bit integer cube map (array) holds along +X, -X, +Y, -Y, +Z, -Z.
    fn cube_axes(&self, tex: &TextureObject, layered: bool, cube: i32) -> anyhow::Result<Vec<u32>> {
        let mut out = self.stream.alloc_zeros::<u32>(6)?;
        let layered = i32::from(layered);
        let mut l = self.stream.launch_builder(&self.cube_axes);
        l.arg(tex).arg(&layered).arg(&cube).arg(&mut out);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (6, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: tex_cube_axes reads the live texture and writes 6 uints into `out`.
        unsafe { l.launch(cfg) }?;
        Ok(self.stream.clone_dtoh(&out)?)
    }
}

/// Runs `check` on every shape of `format` the driver allows with `usage`; fails listing
/// every shape that failed (not only the first), after printing the skipped ones.
fn every_shape(
    format: vk::Format,
    usage: vk::ImageUsageFlags,
    skipped: &[String],
    vk: &vulkan::Context,
    mut check: impl FnMut(&ImageDesc) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for why in skipped {
        println!("  {format:?}: shape skipped: {why}");
    }
    let mut failed = Vec::new();
    for desc in shapes(format, usage) {
        if vk.image_support(&desc).is_err() {
            continue;
        }
        let what = describe(&desc);
        if let Err(e) = check(&desc).and_then(|()| assert_no_validation_errors(vk)) {
            failed.push(format!("{what}: {e:#}"));
        }
    }
    ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}

/// CUDA writes the pattern into every level and layer through surfaces; Vulkan reads it.
fn surface_write(env: &Env, format: vk::Format, skipped: &[String]) -> anyhow::Result<()> {
    let (vk, cu) = env;
    let k = Kernels::new(cu)?;
    every_shape(format, STORAGE, skipped, vk, |desc| {
        let image = SharedImage::new(vk, cu, desc)?;
        image.release_to_cuda()?;
        for level in 0..desc.mip_levels {
            let surf = image.surface(level)?;
            k.write_pattern(&surf, desc, level, seed(level, 0, 1))?;
        }
        image.acquire_from_cuda(&k.stream, vk::ImageLayout::GENERAL)?;
        for level in 0..desc.mip_levels {
            for layer in 0..desc.layers {
                let got = vk.read_image(image.vulkan(), level, layer..layer + 1)?;
                let want = pattern_bytes(layer_bytes(desc, level), seed(level, layer, 1));
                assert_bytes(&got, &want, &format!("level {level} layer {layer}"))?;
            }
        }
        Ok(())
    })
}

/// Vulkan writes every level and layer; CUDA reads them through point-sampled textures,
/// over the whole chain (normalized coordinates, lod = level) and per level (texel
/// coordinates where the shape allows them, i.e. not for cube maps).
fn texture_read(env: &Env, format: vk::Format, skipped: &[String]) -> anyhow::Result<()> {
    let (vk, cu) = env;
    let k = Kernels::new(cu)?;
    every_shape(format, SAMPLED, skipped, vk, |desc| {
        let image = SharedImage::new(vk, cu, desc)?;
        let array = *image.cuda().desc();
        let esize = array.element_bytes().expect("non-BC element size");
        let (mode, channel_bytes, as_integer) = raw_mode(array.format, esize, array.channels);
        let mut levels = Vec::new();
        for level in 0..desc.mip_levels {
            let mut data: Vec<u8> = (0..desc.layers)
                .flat_map(|layer| pattern_bytes(layer_bytes(desc, level), seed(level, layer, 2)))
                .collect();
            if mode == 1 {
                sanitize_floats(&mut data, channel_bytes as usize);
            }
            vk.write_image(image.vulkan(), level, 0..desc.layers, &data)?;
            levels.push(data);
        }
        image.release_to_cuda()?;
        let point = TextureDesc {
            read_as_integer: as_integer,
            ..TextureDesc::default()
        };
        let chain = image.texture(&point)?;
        for (level, want) in (0..).zip(&levels) {
            let got = k.read_raw(&chain, desc, level, true)?;
            assert_bytes(&got, want, &format!("chain, level {level}"))?;
            let texels = !desc.kind.is_cube();
            let per_level = TextureDesc {
                normalized_coords: !texels,
                ..point
            };
            let tex = image.level_texture(level, &per_level)?;
            let got = k.read_raw(&tex, desc, level, !texels)?;
            assert_bytes(&got, want, &format!("level texture {level}"))?;
        }
        image.acquire_from_cuda(&k.stream, vk::ImageLayout::GENERAL)?;
        Ok(())
    })
}

/// f32 -> half bits for the values this test uses (0 or normal, exactly representable).
fn half_bits(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let bits = v.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    assert!(
        (1..31).contains(&exp) && bits & 0x1fff == 0,
        "{v} is not exact in half"
    );
    ((exp as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
}

/// Bilinear sample of `texels` (w x h, `channels` each) at texel coordinates (fx, fy), with
/// clamping: the CPU reference for linear filtering.
fn bilinear(texels: &[f32], channels: usize, (w, h): (usize, usize), fx: f32, fy: f32) -> [f32; 4] {
    let (xs, ys) = (fx - 0.5, fy - 0.5);
    let (x0, y0) = (xs.floor(), ys.floor());
    let (a, b) = (xs - x0, ys - y0);
    let clamp = |v: f32, n: usize| (v.max(0.0) as usize).min(n - 1);
    let at = |x: f32, y: f32, c: usize| texels[(clamp(y, h) * w + clamp(x, w)) * channels + c];
    let mut out = [0.0; 4];
    for (c, o) in out.iter_mut().enumerate().take(channels) {
        *o = (1.0 - a) * (1.0 - b) * at(x0, y0, c)
            + a * (1.0 - b) * at(x0 + 1.0, y0, c)
            + (1.0 - a) * b * at(x0, y0 + 1.0, c)
            + a * b * at(x0 + 1.0, y0 + 1.0, c);
    }
    out
}

/// Linear filtering of UNORM8, half and float textures against a CPU bilinear reference.
/// Tolerance: 0.01 absolute on values in [0, 1] (CUDA interpolates with 8-bit fractional
/// weights: at most about 2/256 off for neighbours 1.0 apart).
fn linear_filtering((vk, cu): &Env) -> anyhow::Result<()> {
    const TOLERANCE: f32 = 0.01;
    let k = Kernels::new(cu)?;
    let formats = [
        vk::Format::R8G8B8A8_UNORM,
        vk::Format::R16G16B16A16_SFLOAT,
        vk::Format::R32_SFLOAT,
    ];
    let descs = formats.into_iter().flat_map(|format| {
        [
            ImageDesc::d2(33, 17, format).mips(2),
            ImageDesc::d2_array(33, 17, 2, format),
        ]
    });
    for desc in descs {
        let (format, desc) = (desc.format, desc.usage(SAMPLED));
        let image = SharedImage::new(vk, cu, &desc)?;
        let channels = image.cuda().desc().channels as usize;
        // Values k/256 (exact in every format); UNORM8 stores k and reads k/255.
        let mut values = Vec::new();
        for level in 0..desc.mip_levels {
            let e = desc.level_extent(level);
            let n = (e.width * e.height * desc.layers) as usize * channels;
            let bytes = pattern_bytes(n as u64, seed(level, 0, 3));
            let (data, texels): (Vec<u8>, Vec<f32>) = match format {
                vk::Format::R8G8B8A8_UNORM => (
                    bytes.clone(),
                    bytes.iter().map(|&b| f32::from(b) / 255.0).collect(),
                ),
                vk::Format::R16G16B16A16_SFLOAT => {
                    let f: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 256.0).collect();
                    let d = f.iter().flat_map(|&v| half_bits(v).to_le_bytes()).collect();
                    (d, f)
                }
                _ => {
                    let f: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 256.0).collect();
                    (f.iter().flat_map(|v| v.to_le_bytes()).collect(), f)
                }
            };
            vk.write_image(image.vulkan(), level, 0..desc.layers, &data)?;
            values.push(texels);
        }
        image.release_to_cuda()?;
        let linear = TextureDesc {
            filter: CUfilter_mode::CU_TR_FILTER_MODE_LINEAR,
            address_mode: CUaddress_mode::CU_TR_ADDRESS_MODE_CLAMP,
            ..TextureDesc::default()
        };
        let tex = image.texture(&linear)?;
        let offset = (0.8f32, 0.3f32);
        let (mut worst, mut spread) = (0.0f32, 0.0f32);
        for (level, texels) in (0..).zip(&values) {
            let got = k.sample_float(&tex, &desc, level, offset)?;
            let e = desc.level_extent(level);
            let (w, h) = (e.width as usize, e.height as usize);
            for layer in 0..desc.layers as usize {
                let plane = &texels[layer * w * h * channels..][..w * h * channels];
                for y in 0..h {
                    for x in 0..w {
                        let (fx, fy) = (x as f32 + offset.0, y as f32 + offset.1);
                        let want = bilinear(plane, channels, (w, h), fx, fy);
                        let point =
                            bilinear(plane, channels, (w, h), x as f32 + 0.5, y as f32 + 0.5);
                        let sample = got[(layer * h + y) * w + x];
                        for c in 0..channels {
                            let err = (sample[c] - want[c]).abs();
                            ensure!(
                                err <= TOLERANCE,
                                "{format:?} level {level} layer {layer} ({x}, {y}) channel {c}: \
                                 CUDA {} vs bilinear {} (point {})",
                                sample[c],
                                want[c],
                                point[c]
                            );
                            worst = worst.max(err);
                            spread = spread.max((want[c] - point[c]).abs());
                        }
                    }
                }
            }
        }
        // The offsets must make filtering matter (far beyond the tolerance), or the check
        // proves nothing. (0.23 seen for R8G8B8A8_UNORM on the H100.)
        let what = describe(&desc);
        ensure!(
            spread > 10.0 * TOLERANCE,
            "{what}: bilinear only {spread} from point"
        );
        println!("  {what}: worst linear error {worst:.5}, bilinear up to {spread:.3} from point (tolerance {TOLERANCE})");
        image.acquire_from_cuda(&k.stream, vk::ImageLayout::GENERAL)?;
    }
    assert_no_validation_errors(vk)
}

/// Cube faces are +X, -X, +Y, -Y, +Z, -Z in both APIs: face (layer) i written by Vulkan is
/// what CUDA samples along axis i, and what CUDA writes to face i Vulkan reads as layer i.
fn cube_faces_in_order((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let usage = STORAGE | vk::ImageUsageFlags::SAMPLED;
    for desc in [
        ImageDesc::cube(4, vk::Format::R32_UINT).usage(usage),
        ImageDesc::cube_array(4, 2, vk::Format::R32_UINT).usage(usage),
    ] {
        let image = SharedImage::new(vk, cu, &desc)?;
        let data: Vec<u8> = (0..desc.layers)
            .flat_map(|layer| (100 + layer).to_le_bytes().repeat(16))
            .collect();
        vk.write_image(image.vulkan(), 0, 0..desc.layers, &data)?;
        image.release_to_cuda()?;
        let tex = image.texture(&TextureDesc {
            read_as_integer: true,
            ..TextureDesc::default()
        })?;
        let layered = desc.kind == ImageKind::CubeArray;
        for cube in 0..desc.layers / 6 {
            let got = k.cube_axes(&tex, layered, as_i32(cube))?;
            let want: Vec<u32> = (0..6).map(|face| 100 + cube * 6 + face).collect();
            ensure!(
                got == want,
                "{:?} cube {cube}: axes read {got:?}",
                desc.kind
            );
        }
        let surf = image.surface(0)?;
        k.fill_index(&surf, &desc, 0, 200)?;
        image.acquire_from_cuda(&k.stream, vk::ImageLayout::GENERAL)?;
        for layer in 0..desc.layers {
            let got = vk.read_image(image.vulkan(), 0, layer..layer + 1)?;
            let want = (200 + layer).to_le_bytes().repeat(16);
            assert_bytes(&got, &want, &format!("{:?} layer {layer}", desc.kind))?;
        }
    }
    assert_no_validation_errors(vk)
}

/// Issue 10 row 15: CUDA's host copies of a SharedImage's levels respect who owns the
/// image: refused (typed) while Vulkan owns it, allowed once it is released to CUDA, and
/// what CUDA wrote is what Vulkan reads after acquiring it back.
fn host_copies_respect_the_owner((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let desc = ImageDesc::d2(8, 4, vk::Format::R8G8B8A8_UNORM).usage(STORAGE);
    let image = SharedImage::new(vk, cu, &desc)?;
    let level = image.level(0)?;
    let data = pattern_bytes(level.byte_len()? as u64, 9);
    common::expect_invalid_arg(level.copy_from_host(&k.stream, &data), "image")?;
    let mut out = vec![0u8; data.len()];
    common::expect_invalid_arg(level.copy_to_host(&k.stream, &mut out), "image")?;
    image.release_to_cuda()?;
    level.copy_from_host(&k.stream, &data)?;
    level.copy_to_host(&k.stream, &mut out)?;
    assert_bytes(&out, &data, "CUDA round trip")?;
    image.acquire_from_cuda(&k.stream, vk::ImageLayout::GENERAL)?;
    common::expect_invalid_arg(level.copy_to_host(&k.stream, &mut out), "image")?;
    assert_bytes(
        &vk.read_image(image.vulkan(), 0, 0..1)?,
        &data,
        "Vulkan read",
    )?;
    assert_no_validation_errors(vk)
}

/// 3D slices keep their order both ways: slice z written by Vulkan is what CUDA samples at
/// depth z, and what CUDA writes at depth z Vulkan reads as slice z.
fn volume_slices_in_order((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let desc =
        ImageDesc::d3(4, 4, 8, vk::Format::R32_UINT).usage(STORAGE | vk::ImageUsageFlags::SAMPLED);
    let image = SharedImage::new(vk, cu, &desc)?;
    let slices = |base: u32| -> Vec<u8> {
        (0..8u32)
            .flat_map(|z| (base + z).to_le_bytes().repeat(16))
            .collect()
    };
    vk.write_image(image.vulkan(), 0, 0..1, &slices(300))?;
    image.release_to_cuda()?;
    let tex = image.texture(&TextureDesc {
        read_as_integer: true,
        ..TextureDesc::default()
    })?;
    assert_bytes(
        &k.read_raw(&tex, &desc, 0, true)?,
        &slices(300),
        "CUDA read",
    )?;
    let surf = image.surface(0)?;
    k.fill_index(&surf, &desc, 0, 400)?;
    image.acquire_from_cuda(&k.stream, vk::ImageLayout::GENERAL)?;
    let got = vk.read_image(image.vulkan(), 0, 0..1)?;
    assert_bytes(&got, &slices(400), "Vulkan read")?;
    assert_no_validation_errors(vk)
}

/// Surfaces and textures keep the array, the import and the Vulkan image alive after the
/// `SharedImage` is gone.
fn drop_order_is_safe_either_way((vk, cu): &Env) -> anyhow::Result<()> {
    let k = Kernels::new(cu)?;
    let desc = ImageDesc::d2(32, 8, vk::Format::R8G8B8A8_UINT)
        .mips(2)
        .usage(STORAGE);
    let image = SharedImage::new(vk, cu, &desc)?;
    image.release_to_cuda()?;
    let surf = image.surface(1)?;
    let vulkan = image.vulkan().clone();
    drop(image);
    k.write_pattern(&surf, &desc, 1, 77)?;
    k.stream.synchronize()?;
    drop(surf);
    vk.acquire_image(&vulkan, vk::ImageLayout::GENERAL)?;
    let got = vk.read_image(&vulkan, 1, 0..1)?;
    assert_bytes(
        &got,
        &pattern_bytes(layer_bytes(&desc, 1), 77),
        "after drop",
    )?;
    drop(vulkan);
    // And the other way round: handles first, then the image.
    let image = SharedImage::new(vk, cu, &desc)?;
    let tex = image.texture(&TextureDesc::default())?;
    let level = image.level(1)?;
    drop((tex, level));
    drop(image);
    assert_no_validation_errors(vk)
}

fn errors_are_typed((vk, cu): &Env) -> anyhow::Result<()> {
    let sampled = SharedImage::new(
        vk,
        cu,
        &ImageDesc::d2(8, 8, vk::Format::R8G8B8A8_UNORM).usage(SAMPLED),
    )?;
    common::expect_invalid_arg(sampled.surface(0), "image")?;
    common::expect_invalid_arg(sampled.level(1), "level")?;
    let texels = TextureDesc {
        normalized_coords: false,
        ..TextureDesc::default()
    };
    common::expect_invalid_arg(sampled.texture(&texels), "desc.normalized_coords")?;
    let mipped_array = ImageDesc::d2_array(8, 8, 2, vk::Format::R8G8B8A8_UNORM).mips(2);
    common::expect_unsupported(SharedImage::new(vk, cu, &mipped_array), &["mip"])?;
    let fds = open_fds();
    let r = SharedImage::new(vk, cu, &ImageDesc::d2(8, 8, vk::Format::R8G8B8_UNORM));
    common::expect_unsupported(r, &["R8G8B8_UNORM", "3-channel"])?;
    ensure!(open_fds() == fds, "a refused format leaked an fd");
    assert_no_validation_errors(vk)
}

/// Create, import, map, make a surface and a texture, drop; open fds and free device memory
/// stay flat. 10,000 cycles, or 2,000 under the validation layer (which is slow).
fn no_leaks((vk, cu): &Env) -> anyhow::Result<()> {
    let validating = std::env::var("VK_INSTANCE_LAYERS").is_ok_and(|l| !l.is_empty());
    let cycles = if validating { 2_000 } else { 10_000 };
    let desc = ImageDesc::d2(64, 64, vk::Format::R8G8B8A8_UNORM)
        .mips(3)
        .usage(STORAGE | vk::ImageUsageFlags::SAMPLED);
    let cycle = || -> anyhow::Result<()> {
        let image = SharedImage::new(vk, cu, &desc)?;
        let surf = image.surface(2)?;
        let tex = image.texture(&TextureDesc::default())?;
        drop((surf, image, tex));
        Ok(())
    };
    common::assert_cycles_leak_free(cu, cycles, cycle)?;
    assert_no_validation_errors(vk)
}

/// Why the driver refuses `format` with `usage`: `Err` for the whole format (its 2D shape),
/// else the reasons for the other shapes it refuses.
fn refusals(
    vk: &vulkan::Context,
    format: vk::Format,
    usage: vk::ImageUsageFlags,
) -> Result<Vec<String>, String> {
    let mut shapes_refused = Vec::new();
    for (i, desc) in shapes(format, usage).iter().enumerate() {
        if let Err(e) = vk.image_support(desc) {
            if i == 0 {
                return Err(format!("the driver refuses it: {e}"));
            }
            shapes_refused.push(format!("{:?}: {e}", desc.kind));
        }
    }
    Ok(shapes_refused)
}

/// A trial per shareable non-BC format for `family`, skipped (with the reason) where the
/// driver refuses the format with `usage`.
fn format_trials(
    probe: &common::Probe<Env>,
    family: &'static str,
    usage: vk::ImageUsageFlags,
    run: fn(&Env, vk::Format, &[String]) -> anyhow::Result<()>,
) -> Vec<Trial> {
    let mut refused = Vec::new();
    let trials = shareable_formats()
        .filter(|(f, _)| texel_block(*f).is_some_and(|b| b.width == 1))
        .map(|(format, _)| {
            let name = format!("{family}/{format:?}");
            let skipped = match (probe.as_ref(), excluded(format)) {
                (_, Some(why)) => Err(why.to_owned()),
                (Ok((vk, _)), None) => refusals(vk, format, usage),
                (Err(_), None) => Ok(Vec::new()),
            };
            match skipped {
                Ok(shapes) => trial(&name, probe, move |env| run(env, format, &shapes)),
                Err(why) => {
                    refused.push(format!("{format:?}"));
                    let name = common::named(&name);
                    eprintln!("{name}: skipped: {why}");
                    Trial::test(name, move || Err(format!("skipped: {why}").into()))
                        .with_ignored_flag(true)
                        .with_kind("skipped")
                }
            }
        })
        .collect();
    if !refused.is_empty() {
        eprintln!(
            "{family}: {} formats refused by the driver: {}",
            refused.len(),
            refused.join(", ")
        );
    }
    trials
}

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::gpu_probe();
    let tests: [common::Test<Env>; 7] = [
        ("linear_filtering_matches_bilinear", linear_filtering),
        ("cube_faces_in_order", cube_faces_in_order),
        ("volume_slices_in_order", volume_slices_in_order),
        (
            "drop_order_is_safe_either_way",
            drop_order_is_safe_either_way,
        ),
        ("errors_are_typed", errors_are_typed),
        (
            "host_copies_respect_the_owner",
            host_copies_respect_the_owner,
        ),
        ("create_import_drop_no_leaks", no_leaks),
    ];
    let mut trials = format_trials(&probe, "surface_write", STORAGE, surface_write);
    trials.extend(format_trials(&probe, "texture_read", SAMPLED, texture_read));
    trials.extend(tests.into_iter().map(|(name, f)| trial(name, &probe, f)));
    common::note(&probe, "CUDA device matching the Vulkan device");
    trials
}
