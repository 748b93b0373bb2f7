//! Vulkan-side image tests: run on any Vulkan device with `VK_KHR_external_memory_fd`
//! (lavapipe in CI, the NVIDIA driver on the GPU host). Zero-copy is checked for real: the
//! image's memory is exported as an fd and imported back as a second image, texels are
//! written into every level and layer through one image and read through the other, with
//! the release to / acquire from `VK_QUEUE_FAMILY_EXTERNAL` in between, both ways.

use crate::common;
use libtest_mimic::Trial;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use anyhow::{bail, ensure, Context as _};
use common::{
    assert_bytes, assert_no_validation_errors, expect_invalid_arg, expect_unsupported, open_fds,
    pattern_bytes, trial,
};
use vkcuda::ash::vk;
use vkcuda::external::{MemoryHandle, MemoryHandleType, MemoryImport};
use vkcuda::util::{Commands, OneShot};
use vkcuda::vulkan::{
    texel_block, BufferDesc, Context, ContextDesc, ExternalBuffer, ExternalImage, ImageDesc,
    ImageKind, ImageOwner, ImageState,
};
use vkcuda::Error;

/// The formats every trial family covers (one trial each).
const FORMATS: [vk::Format; 5] = [
    vk::Format::R8G8B8A8_UNORM,
    vk::Format::R16G16B16A16_SFLOAT,
    vk::Format::R32_SFLOAT,
    vk::Format::R8_UINT,
    vk::Format::R16G16_SINT,
];

/// 2D, 2D array of 3, cube, cube array of 2 and 3D of depth 4; 1 and 4 mip levels each.
/// Extents are not powers of two so row pitches and level sizes are uneven.
fn shapes(format: vk::Format) -> Vec<ImageDesc> {
    let mut all = Vec::new();
    for mips in [1, 4] {
        all.push(ImageDesc::d2(37, 19, format).mips(mips));
        all.push(ImageDesc::d2_array(24, 17, 3, format).mips(mips));
        all.push(ImageDesc::cube(20, format).mips(mips));
        all.push(ImageDesc::cube_array(12, 2, format).mips(mips));
        all.push(ImageDesc::d3(21, 11, 4, format).mips(mips));
    }
    all
}

/// [`ExternalImage::import`] for the trials that hand it wrong descriptions on purpose.
fn import_image(
    vk: &Context,
    desc: &ImageDesc,
    import: MemoryImport,
) -> vkcuda::Result<ExternalImage> {
    // SAFETY: each caller passes a description vkcuda refuses before any driver call, or
    // (foreign_fd_is_refused) a handle that is not memory at all, for the driver to refuse:
    // the error paths are what these trials test.
    unsafe { ExternalImage::import(vk, desc, import) }
}

/// A seed that differs per level, layer and direction.
fn seed(level: u32, layer: u32, pass: u32) -> u32 {
    level * 1_000 + layer * 10 + pass
}

/// Bytes of one layer of `level`, tightly packed (all test formats are uncompressed).
fn layer_bytes(desc: &ImageDesc, level: u32) -> u64 {
    let texel = texel_block(desc.format).expect("test formats have a texel size");
    let e = desc.level_extent(level);
    u64::from(texel.bytes) * u64::from(e.width) * u64::from(e.height) * u64::from(e.depth)
}

/// Writes every level (all layers in one copy) through `from`, hands the memory over
/// (release `from`, acquire `to`), and reads every level and layer back through `to`.
fn cross(vk: &Context, from: &ExternalImage, to: &ExternalImage, pass: u32) -> anyhow::Result<()> {
    let desc = from.desc().clone();
    for level in 0..desc.mip_levels {
        let layers: Vec<Vec<u8>> = (0..desc.layers)
            .map(|layer| pattern_bytes(layer_bytes(&desc, level), seed(level, layer, pass)))
            .collect();
        vk.write_image(from, level, 0..desc.layers, &layers.concat())?;
    }
    vk.release_image(from)?;
    ensure!(
        from.state().owner == ImageOwner::External,
        "{:?}",
        from.state()
    );
    vk.acquire_image(to, vk::ImageLayout::GENERAL)?;
    ensure!(
        to.state()
            == ImageState {
                owner: ImageOwner::Vulkan,
                layout: vk::ImageLayout::GENERAL
            },
        "{:?}",
        to.state()
    );
    for level in 0..desc.mip_levels {
        for layer in 0..desc.layers {
            let got = vk.read_image(to, level, layer..layer + 1)?;
            let want = pattern_bytes(got.len() as u64, seed(level, layer, pass));
            assert_bytes(&got, &want, &format!("level {level} layer {layer}"))?;
        }
        // The whole level at once is the layers in order.
        let all = vk.read_image(to, level, 0..desc.layers)?;
        let per_layer = all.len() / desc.layers as usize;
        for layer in 0..desc.layers {
            let want = pattern_bytes(per_layer as u64, seed(level, layer, pass));
            let got = &all[layer as usize * per_layer..][..per_layer];
            assert_bytes(got, &want, &format!("level {level}, layer {layer} of all"))?;
        }
    }
    Ok(())
}

/// One format over every shape: a -> b, then b -> a.
fn roundtrip(vk: &Context, format: vk::Format) -> anyhow::Result<()> {
    for desc in shapes(format) {
        let what = || {
            let e = desc.extent;
            format!(
                "{:?} {}x{}x{} layers {} mips {}",
                desc.kind, e.width, e.height, e.depth, desc.layers, desc.mip_levels
            )
        };
        let a = ExternalImage::new(vk, &desc).with_context(what)?;
        let b = a.alias().with_context(what)?;
        ensure!(
            b.state().owner == ImageOwner::External,
            "imported images start released"
        );
        cross(vk, &a, &b, 1).with_context(|| format!("{}: a -> b", what()))?;
        cross(vk, &b, &a, 2).with_context(|| format!("{}: b -> a", what()))?;
        assert_no_validation_errors(vk).with_context(what)?;
    }
    Ok(())
}

/// LINEAR tiling where the driver allows it for a one-level 2D image; the driver's own
/// limits decide the rest (typically: no mips, no layers).
fn linear_tiling_where_allowed(vk: &Context) -> anyhow::Result<()> {
    let desc = ImageDesc::d2(33, 7, vk::Format::R8G8B8A8_UNORM)
        .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
        .tiling(vk::ImageTiling::LINEAR);
    let support = match vk.image_support(&desc) {
        Ok(s) if s.external.exportable => s,
        other => {
            eprintln!("LINEAR R8G8B8A8 not exportable here ({other:?}); checked the refusal");
            return expect_unsupported(ExternalImage::new(vk, &desc), &["LINEAR"]);
        }
    };
    let a = ExternalImage::new(vk, &desc)?;
    let b = a.alias()?;
    cross(vk, &a, &b, 3)?;
    if support.max_mip_levels < 4 {
        let e = expect_invalid_arg(
            ExternalImage::new(vk, &desc.clone().mips(4)),
            "desc.mip_levels",
        )?;
        let text = e.to_string();
        ensure!(
            text.contains("LINEAR") && text.contains("at most"),
            "{text}"
        );
    }
    assert_no_validation_errors(vk)
}

fn export_describes_the_allocation(vk: &Context) -> anyhow::Result<()> {
    let desc = ImageDesc::cube(16, vk::Format::R8G8B8A8_UNORM).mips(2);
    let a = ExternalImage::new(vk, &desc)?;
    let import = a.export()?;
    ensure!(import.dedicated, "exports are dedicated allocations");
    ensure!(
        import.size == a.allocation_size() && import.size >= 16 * 16 * 4 * 6,
        "export size {} vs allocation {}",
        import.size,
        a.allocation_size()
    );
    ensure!(matches!(import.handle, MemoryHandle::OpaqueFd(_)));
    let d = a.desc();
    ensure!(d.kind == ImageKind::Cube && d.layers == 6 && d.mip_levels == 2);
    ensure!(d
        .kind
        .create_flags()
        .contains(vk::ImageCreateFlags::CUBE_COMPATIBLE));
    ensure!(d.level_extent(1).width == 8);
    ensure!(
        a.state()
            == ImageState {
                owner: ImageOwner::Vulkan,
                layout: vk::ImageLayout::UNDEFINED
            }
    );
    Ok(())
}

/// Records the helpers on a command buffer of the caller's own, as an application would.
fn record_on_own_command_buffer(vk: &Context) -> anyhow::Result<()> {
    let device = vk.device();
    let desc = ImageDesc::d2_array(16, 16, 2, vk::Format::R8G8B8A8_UNORM).mips(3);
    let a = ExternalImage::new(vk, &desc)?;
    let b = a.alias()?;
    let data = pattern_bytes(16 * 16 * 4 * 2, 7);
    vk.write_image(&a, 0, 0..2, &data)?;

    let pool_info =
        vk::CommandPoolCreateInfo::default().queue_family_index(vk.queue_family_index());
    // SAFETY: valid device and create info.
    let pool = unsafe { device.create_command_pool(&pool_info, None) }?;
    let run = |record: &dyn Fn(vk::CommandBuffer) -> vkcuda::Result<()>| -> anyhow::Result<()> {
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: `pool` belongs to `device`.
        let cmd = unsafe { device.allocate_command_buffers(&alloc) }?[0];
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: a fresh command buffer.
        unsafe { device.begin_command_buffer(cmd, &begin) }?;
        record(cmd)?;
        // SAFETY: recording began above.
        unsafe { device.end_command_buffer(cmd) }?;
        let cmds = [cmd];
        let submit = vk::SubmitInfo::default().command_buffers(&cmds);
        let queue = vk.queue()?;
        // SAFETY: the queue is locked; the command buffer is complete.
        unsafe { device.queue_submit(*queue, &[submit], vk::Fence::null()) }?;
        // SAFETY: as above.
        unsafe { device.queue_wait_idle(*queue) }?;
        // SAFETY: the submission has completed.
        unsafe { device.free_command_buffers(pool, &cmds) };
        Ok(())
    };
    let result = (|| -> anyhow::Result<()> {
        // In every `record_*` call below, `cmd` is recording, from a pool of the context's
        // queue family, and each command buffer is submitted once, in recording order.
        run(&|cmd| {
            // SAFETY: see above.
            unsafe { a.record_transition(cmd, vk::ImageLayout::TRANSFER_SRC_OPTIMAL) }?;
            // SAFETY: see above (already there: records nothing).
            unsafe { a.record_transition(cmd, vk::ImageLayout::TRANSFER_SRC_OPTIMAL) }?;
            // SAFETY: see above.
            unsafe { a.record_release(cmd) }
        })?;
        ensure!(a.state().owner == ImageOwner::External);
        let e = vk
            .read_image(&a, 0, 0..1)
            .expect_err("released images are off limits");
        ensure!(e.to_string().contains("VK_QUEUE_FAMILY_EXTERNAL"), "{e}");
        // SAFETY: as above.
        run(&|cmd| unsafe { b.record_acquire(cmd, vk::ImageLayout::SHADER_READ_ONLY_OPTIMAL) })?;
        ensure!(b.state().layout == vk::ImageLayout::SHADER_READ_ONLY_OPTIMAL);
        assert_bytes(
            &vk.read_image(&b, 0, 0..2)?,
            &data,
            "a -> b, own command buffers",
        )?;
        ensure!(
            b.state().layout == vk::ImageLayout::GENERAL,
            "copies leave GENERAL"
        );
        // Initialize discards: allowed on an owned image, refused on a released one.
        // SAFETY: as above.
        run(&|cmd| unsafe { b.record_initialize(cmd) })?;
        // SAFETY: as above.
        run(&|cmd| unsafe { b.record_release(cmd) })?;
        // SAFETY: the image is released, so the call fails before recording anything.
        let r = unsafe { b.record_initialize(vk::CommandBuffer::null()) };
        expect_invalid_arg(r, "image")?;
        vk.acquire_image(&a, vk::ImageLayout::GENERAL)?;
        Ok(())
    })();
    // SAFETY: every submission from the pool has completed.
    unsafe { device.destroy_command_pool(pool, None) };
    result?;
    assert_no_validation_errors(vk)
}

/// Ownership misuse is refused before anything is recorded.
fn ownership_misuse(vk: &Context) -> anyhow::Result<()> {
    let desc = ImageDesc::d2(8, 8, vk::Format::R8G8B8A8_UNORM);
    let a = ExternalImage::new(vk, &desc)?;
    expect_invalid_arg(vk.acquire_image(&a, vk::ImageLayout::GENERAL), "image")?;
    vk.release_image(&a)?;
    expect_invalid_arg(vk.release_image(&a), "image")?;
    expect_invalid_arg(vk.write_image(&a, 0, 0..1, &[0; 256]), "image")?;
    expect_invalid_arg(vk.acquire_image(&a, vk::ImageLayout::UNDEFINED), "layout")?;
    let e = expect_invalid_arg(
        vk.acquire_image(&a, vk::ImageLayout::COLOR_ATTACHMENT_OPTIMAL),
        "layout",
    )?;
    ensure!(e.to_string().contains("COLOR_ATTACHMENT"), "{e}");
    ensure!(
        a.state().owner == ImageOwner::External,
        "refusals change nothing"
    );
    vk.acquire_image(&a, vk::ImageLayout::TRANSFER_DST_OPTIMAL)?;
    vk.write_image(&a, 0, 0..1, &[0; 256])?;

    let b = a.alias()?;
    expect_unsupported(b.export(), &["imported"])?;
    assert_no_validation_errors(vk)
}

/// Images and buffers of another context (a second `VkDevice` on the same GPU, so the same
/// UUID) are refused by the one-shot copies and hand-offs and by `Commands`, naming the
/// argument; nothing reaches the driver.
fn another_contexts_image_is_refused(a: &Context) -> anyhow::Result<()> {
    let b = Context::new(&ContextDesc::default())?;
    let desc = ImageDesc::d2(8, 8, vk::Format::R8G8B8A8_UNORM);
    let theirs = Arc::new(ExternalImage::new(&b, &desc)?);
    expect_invalid_arg(a.write_image(&theirs, 0, 0..1, &[0; 256]), "image")?;
    expect_invalid_arg(a.read_image(&theirs, 0, 0..1), "image")?;
    expect_invalid_arg(a.release_image(&theirs), "image")?;
    let mut cmds = Commands::new(a)?;
    expect_invalid_arg(cmds.release_image(&theirs), "image")?;
    expect_invalid_arg(
        cmds.acquire_image(&theirs, vk::ImageLayout::GENERAL),
        "image",
    )?;
    let mine = Arc::new(ExternalImage::new(a, &desc)?);
    let their_buffer = Arc::new(ExternalBuffer::new(&b, &BufferDesc::new(256))?);
    expect_invalid_arg(cmds.copy_image_to_buffer(&mine, &their_buffer), "buffer")?;
    ensure!(
        theirs.state().layout == vk::ImageLayout::UNDEFINED,
        "refusals change nothing"
    );
    b.write_image(&theirs, 0, 0..1, &[5; 256])?;
    ensure!(
        b.read_image(&theirs, 0, 0..1)? == [5; 256],
        "the owner's bytes"
    );
    drop(cmds);
    assert_no_validation_errors(a)?;
    assert_no_validation_errors(&b)
}

/// Staged-copy arguments are checked.
fn transfer_arguments(vk: &Context) -> anyhow::Result<()> {
    let a = ExternalImage::new(
        vk,
        &ImageDesc::d2_array(8, 8, 2, vk::Format::R8_UINT).mips(2),
    )?;
    expect_invalid_arg(vk.read_image(&a, 2, 0..1), "level")?;
    expect_invalid_arg(vk.read_image(&a, 0, 1..1), "layers")?;
    expect_invalid_arg(vk.read_image(&a, 0, 1..3), "layers")?;
    let e = expect_invalid_arg(vk.write_image(&a, 1, 0..2, &[0; 31]), "data")?;
    ensure!(e.to_string().contains("exactly 32 bytes"), "{e}");
    vk.write_image(&a, 1, 0..2, &[9; 32])?;
    ensure!(vk.read_image(&a, 1, 1..2)? == [9; 16]);
    let no_src = ImageDesc::d2(8, 8, vk::Format::R8_UINT).usage(vk::ImageUsageFlags::TRANSFER_DST);
    let s = ExternalImage::new(vk, &no_src)?;
    let e = expect_invalid_arg(vk.read_image(&s, 0, 0..1), "image")?;
    ensure!(e.to_string().contains("TRANSFER_SRC"), "{e}");
    assert_no_validation_errors(vk)
}

/// Each bad description: a typed error naming the field (and the limit), nothing leaked.
fn bad_descriptions(vk: &Context) -> anyhow::Result<()> {
    let fds = open_fds();
    let f = vk::Format::R8G8B8A8_UNORM;
    let new = |d: &ImageDesc| ExternalImage::new(vk, d);
    expect_invalid_arg(new(&ImageDesc::d2(0, 4, f)), "desc.extent.width")?;
    expect_invalid_arg(new(&ImageDesc::d2(4, 0, f)), "desc.extent.height")?;
    expect_invalid_arg(new(&ImageDesc::d3(4, 4, 0, f)), "desc.extent.depth")?;
    let mut flat = ImageDesc::d2(4, 4, f);
    flat.extent.depth = 2;
    expect_invalid_arg(new(&flat), "desc.extent.depth")?;

    let e = expect_invalid_arg(new(&ImageDesc::d2(16, 9, f).mips(6)), "desc.mip_levels")?;
    ensure!(e.to_string().contains("1 to 5"), "{e}");
    expect_invalid_arg(new(&ImageDesc::d2(16, 9, f).mips(0)), "desc.mip_levels")?;
    expect_invalid_arg(new(&ImageDesc::d3(2, 2, 64, f).mips(8)), "desc.mip_levels")?;
    new(&ImageDesc::d3(2, 2, 64, f).mips(7)).context("3D depth counts for the chain")?;
    let padded = ImageDesc::d2(16, 16, vk::Format::R10X6G10X6B10X6A10X6_UNORM_4PACK16).mips(2);
    let e = expect_invalid_arg(new(&padded), "desc.mip_levels")?;
    ensure!(e.to_string().contains("CbCr"), "{e}");
    match new(&ImageDesc::d2(4, 4, vk::Format::A8_UNORM_KHR)) {
        Err(Error::MissingExtension { name, needed_for }) => ensure!(
            name == "VK_KHR_maintenance5" && needed_for.contains("A8_UNORM"),
            "{name}, {needed_for}"
        ),
        other => bail!("A8_UNORM: expected MissingExtension, got {:?}", other.err()),
    }

    let mut oblong = ImageDesc::cube(16, f);
    oblong.extent.height = 8;
    let e = expect_invalid_arg(new(&oblong), "desc.extent.height")?;
    ensure!(e.to_string().contains("square"), "{e}");
    let mut five = ImageDesc::cube(16, f);
    five.layers = 5;
    expect_invalid_arg(new(&five), "desc.layers")?;
    expect_invalid_arg(new(&ImageDesc::cube_array(16, 0, f)), "desc.layers")?;
    let mut seven = ImageDesc::cube_array(16, 1, f);
    seven.layers = 7;
    expect_invalid_arg(new(&seven), "desc.layers")?;
    let mut layered_3d = ImageDesc::d3(8, 8, 4, f);
    layered_3d.layers = 2;
    let e = expect_invalid_arg(new(&layered_3d), "desc.layers")?;
    ensure!(e.to_string().contains("3D"), "{e}");
    let mut layered_2d = ImageDesc::d2(8, 8, f);
    layered_2d.layers = 3;
    expect_invalid_arg(new(&layered_2d), "desc.layers")?;
    expect_invalid_arg(new(&ImageDesc::d2_array(8, 8, 0, f)), "desc.layers")?;

    let limits = vk.properties().limits;
    let too_many = limits.max_image_array_layers + 1;
    let e = expect_invalid_arg(new(&ImageDesc::d2_array(8, 8, too_many, f)), "desc.layers")?;
    ensure!(e.to_string().contains("maxImageArrayLayers"), "{e}");
    let wide = limits.max_image_dimension2_d + 1;
    let e = expect_invalid_arg(new(&ImageDesc::d2(wide, 1, f)), "desc.extent.width")?;
    ensure!(
        e.to_string()
            .contains(&limits.max_image_dimension2_d.to_string()),
        "{e}"
    );
    let big_cube = limits.max_image_dimension_cube + 1;
    expect_invalid_arg(new(&ImageDesc::cube(big_cube, f)), "desc.extent.width")?;
    let deep = limits.max_image_dimension3_d + 1;
    expect_invalid_arg(new(&ImageDesc::d3(1, 1, deep, f)), "desc.extent.depth")?;

    expect_invalid_arg(
        new(&ImageDesc::d2(8, 8, vk::Format::UNDEFINED)),
        "desc.format",
    )?;
    let no_usage = ImageDesc::d2(8, 8, f).usage(vk::ImageUsageFlags::empty());
    expect_invalid_arg(new(&no_usage), "desc.usage")?;
    let drm = ImageDesc::d2(8, 8, f).tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT);
    expect_invalid_arg(new(&drm), "desc.tiling")?;

    // 3-channel 8-bit formats cannot be storage images on lavapipe (nor on NVIDIA).
    let rgb = ImageDesc::d2(8, 8, vk::Format::R8G8B8_UNORM);
    expect_unsupported(new(&rgb), &["R8G8B8_UNORM", "STORAGE", "OPTIMAL"])?;
    // A format the device samples but cannot store to: the missing feature is named.
    let sampled_only = [
        vk::Format::R8G8B8A8_SRGB,
        vk::Format::B8G8R8A8_SRGB,
        vk::Format::R8G8_SRGB,
        vk::Format::R8_SRGB,
    ]
    .into_iter()
    .find(|&format| {
        // SAFETY: valid physical device of the context's instance.
        let props = unsafe {
            vk.instance()
                .get_physical_device_format_properties(vk.physical_device(), format)
        };
        let features = props.optimal_tiling_features;
        features.contains(vk::FormatFeatureFlags::SAMPLED_IMAGE)
            && !features.contains(vk::FormatFeatureFlags::STORAGE_IMAGE)
    });
    match sampled_only {
        Some(format) => {
            let desc = ImageDesc::d2(8, 8, format);
            let name = format!("{format:?}");
            expect_unsupported(new(&desc), &[&name, "lacks", "STORAGE_IMAGE"])?;
            let sampled =
                desc.usage(vk::ImageUsageFlags::SAMPLED | vk::ImageUsageFlags::TRANSFER_DST);
            new(&sampled).context("the same format without STORAGE")?;
        }
        None => eprintln!("no sampled-but-not-storage sRGB format here; that refusal not checked"),
    }
    let win32 = ImageDesc::d2(8, 8, f).handle_type(MemoryHandleType::OpaqueWin32);
    expect_unsupported(new(&win32), &["OpaqueWin32"])?;
    let nvsci = ImageDesc::d2(8, 8, f).handle_type(MemoryHandleType::NvSciBuf);
    expect_unsupported(new(&nvsci), &["NvSciBuf"])?;
    expect_unsupported(vk.image_support(&nvsci), &["NvSciBuf"])?;
    if !vk.can_export_dma_buf() {
        let dma = ImageDesc::d2(8, 8, f).handle_type(MemoryHandleType::DmaBufFd);
        match new(&dma) {
            Err(Error::MissingExtension { name, .. }) => {
                ensure!(name == "VK_EXT_external_memory_dma_buf", "{name}")
            }
            other => bail!("DmaBufFd: expected MissingExtension, got {:?}", other.err()),
        }
    }
    ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    assert_no_validation_errors(vk)
}

/// Import refusals close the fd they were given.
fn bad_imports(vk: &Context) -> anyhow::Result<()> {
    let fds = open_fds();
    let desc = ImageDesc::d2(32, 32, vk::Format::R8G8B8A8_UNORM).mips(2);
    let a = ExternalImage::new(vk, &desc)?;
    let mut small = a.export()?;
    small.size = 64;
    expect_invalid_arg(import_image(vk, &desc, small), "import.size")?;
    let mut large = a.export()?;
    large.size += 4096;
    let e = expect_invalid_arg(import_image(vk, &desc, large), "import.size")?;
    ensure!(
        e.to_string().contains("exactly"),
        "dedicated imports are exact: {e}"
    );
    let dma_desc = desc.clone().handle_type(MemoryHandleType::DmaBufFd);
    expect_invalid_arg(import_image(vk, &dma_desc, a.export()?), "desc.handle_type")?;
    let bad_desc = desc.clone().mips(9);
    expect_invalid_arg(import_image(vk, &bad_desc, a.export()?), "desc.mip_levels")?;
    let rgb = ImageDesc::d2(32, 32, vk::Format::R8G8B8_UNORM);
    expect_unsupported(import_image(vk, &rgb, a.export()?), &["R8G8B8_UNORM"])?;
    drop(a); // lavapipe holds an fd per exportable allocation
    ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    assert_no_validation_errors(vk)
}

/// An fd that is not exported memory is refused by the driver and closed by vkcuda.
fn foreign_fd_is_refused(vk: &Context) -> anyhow::Result<()> {
    let fds = open_fds();
    let desc = ImageDesc::d2(32, 32, vk::Format::R8G8B8A8_UNORM);
    let size = ExternalImage::new(vk, &desc)?.allocation_size();
    let dev_null: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let bogus = MemoryImport {
        handle: MemoryHandle::OpaqueFd(dev_null),
        size,
        dedicated: true,
        memory_type: None,
    };
    ensure!(
        import_image(vk, &desc, bogus).is_err(),
        "importing /dev/null as image memory succeeded"
    );
    ensure!(open_fds() == fds, "the rejected fd leaked");
    Ok(())
}

/// Create/export/import/drop 1000 times: open fds stay flat.
fn no_leaks(vk: &Context) -> anyhow::Result<()> {
    let desc = ImageDesc::d2(64, 64, vk::Format::R8G8B8A8_UNORM).mips(4);
    let cycle = || -> anyhow::Result<()> {
        let a = ExternalImage::new(vk, &desc)?;
        let b = a.alias()?;
        drop(a.export()?); // an export nobody imports is closed on drop
        drop((b, a));
        Ok(())
    };
    common::assert_cycles_keep_fds(1000, cycle)?;
    assert_no_validation_errors(vk)
}

/// A trial body.
type Test = fn(&Context) -> anyhow::Result<()>;

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: [(&str, Test); 11] = [
        (
            "validation_is_counted_when_requested",
            common::validation_is_counted_when_requested,
        ),
        ("linear_tiling_where_allowed", linear_tiling_where_allowed),
        (
            "export_describes_the_allocation",
            export_describes_the_allocation,
        ),
        ("record_on_own_command_buffer", record_on_own_command_buffer),
        ("ownership_misuse_is_refused", ownership_misuse),
        ("transfer_arguments", transfer_arguments),
        ("bad_descriptions_are_typed_and_leak_free", bad_descriptions),
        ("bad_imports_close_the_fd", bad_imports),
        ("create_destroy_1000_no_fd_growth", no_leaks),
        (
            "another_contexts_image_is_refused",
            another_contexts_image_is_refused,
        ),
        // Last: on NVIDIA 580 a refused foreign fd leaves later vkAllocateMemory calls
        // failing with OUT_OF_DEVICE_MEMORY (seen on the H100), so nothing runs after it.
        ("foreign_fd_is_refused", foreign_fd_is_refused),
    ];
    let mut trials: Vec<_> = FORMATS
        .into_iter()
        .map(|format| {
            let name = format!("zero_copy_roundtrip_{format:?}");
            trial(&name, &probe, move |vk| roundtrip(vk, format))
        })
        .collect();
    trials.extend(tests.into_iter().map(|(name, f)| trial(name, &probe, f)));
    common::note(&probe, "Vulkan device with VK_KHR_external_memory_fd");
    trials
}
