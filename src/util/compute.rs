//! A minimal compute pipeline over one storage image: what a demo or a test needs to render
//! into an [`ExternalImage`] with Vulkan before CUDA processes it. Not a general pipeline
//! abstraction: one SPIR-V module, entry point `main`, a storage image at set 0 binding 0,
//! and up to `maxPushConstantsSize` bytes of push constants.

use std::sync::Arc;

use ash::vk;

use crate::error::{Error, Result};
use crate::vulkan::{Context, ExternalImage, ImageKind};

/// SPIR-V's magic number, first word of every module.
const SPIRV_MAGIC: u32 = 0x0723_0203;

/// A compute pipeline with one storage-image binding and push constants.
pub struct ComputePass {
    ctx: Context,
    pipeline: vk::Pipeline,
    layout: vk::PipelineLayout,
    set_layout: vk::DescriptorSetLayout,
    push_size: u32,
    workgroup: [u32; 2],
}

impl std::fmt::Debug for ComputePass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePass")
            .field("push_size", &self.push_size)
            .field("workgroup", &self.workgroup)
            .finish_non_exhaustive()
    }
}

impl Drop for ComputePass {
    fn drop(&mut self) {
        let d = self.ctx.device();
        // SAFETY: made from this device (null handles are ignored); every `ComputeTarget`
        // holds an Arc of this pass and recorded work must finish before its target goes
        // (`ComputePass::record` precondition 2), so nothing uses them now.
        unsafe { d.destroy_pipeline(self.pipeline, None) };
        // SAFETY: as above.
        unsafe { d.destroy_pipeline_layout(self.layout, None) };
        // SAFETY: as above.
        unsafe { d.destroy_descriptor_set_layout(self.set_layout, None) };
    }
}

/// Reads SPIR-V bytes into words, checking length and magic number.
fn spirv_words(spirv: &[u8]) -> Result<Vec<u32>> {
    if !spirv.len().is_multiple_of(4) || spirv.len() < 20 {
        return Err(Error::invalid(
            "spirv",
            format!("{} bytes", spirv.len()),
            "a SPIR-V module: a multiple of 4 bytes, at least the 5-word header",
        ));
    }
    let words: Vec<u32> = spirv
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if words[0] != SPIRV_MAGIC {
        return Err(Error::invalid(
            "spirv",
            format!("first word {:#010x}", words[0]),
            format!("the SPIR-V magic number {SPIRV_MAGIC:#010x} (little-endian)"),
        ));
    }
    Ok(words)
}

impl ComputePass {
    /// Builds the pipeline from `spirv` (entry point `main`), whose workgroup size is
    /// `workgroup` (x, y), with `push_size` bytes of push constants.
    ///
    /// Only the SPIR-V header is checked: vkcuda does not reflect the module (that would
    /// make a SPIR-V parser a dependency of every user), so its interface is the caller's
    /// promise.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bytes that are not SPIR-V, a zero workgroup size, or
    /// `push_size` above the device's `maxPushConstantsSize`; driver errors.
    ///
    /// # Safety
    /// 1. `spirv` is a valid SPIR-V module (VUID-VkShaderModuleCreateInfo-pCode-08737) with a
    ///    `GLCompute` entry point named `main`.
    /// 2. The entry point uses no resource other than one storage image (a 2D image whose
    ///    format the shader's declaration matches, or an unknown-format image where the
    ///    device allows it) at descriptor set 0, binding 0.
    /// 3. Its push-constant block, if any, fits within `push_size` bytes at offset 0.
    /// 4. Its declared local size is `workgroup` in x and y and 1 in z (the dispatch is
    ///    sized from it).
    pub unsafe fn new(
        ctx: &Context,
        spirv: &[u8],
        workgroup: [u32; 2],
        push_size: u32,
    ) -> Result<Arc<Self>> {
        let words = spirv_words(spirv)?;
        if workgroup.contains(&0) {
            return Err(Error::invalid(
                "workgroup",
                format!("{workgroup:?}"),
                "both sizes above 0",
            ));
        }
        let max_push = ctx.properties().limits.max_push_constants_size;
        if push_size > max_push {
            return Err(Error::invalid(
                "push_size",
                format!("{push_size} bytes"),
                format!("at most maxPushConstantsSize = {max_push}"),
            ));
        }
        let d = ctx.device();
        let binding = [vk::DescriptorSetLayoutBinding::default()
            .binding(0)
            .descriptor_type(vk::DescriptorType::STORAGE_IMAGE)
            .descriptor_count(1)
            .stage_flags(vk::ShaderStageFlags::COMPUTE)];
        let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&binding);
        // SAFETY: valid device and create info.
        let set_layout = unsafe { d.create_descriptor_set_layout(&info, None) }
            .map_err(|r| Error::vk("vkCreateDescriptorSetLayout", r))?;
        // Own what exists so far, so an error below frees it (Drop handles null handles).
        let mut pass = Self {
            ctx: ctx.clone(),
            pipeline: vk::Pipeline::null(),
            layout: vk::PipelineLayout::null(),
            set_layout,
            push_size,
            workgroup,
        };
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .size(push_size)];
        let sets = [set_layout];
        let mut info = vk::PipelineLayoutCreateInfo::default().set_layouts(&sets);
        if push_size > 0 {
            info = info.push_constant_ranges(&ranges);
        }
        // SAFETY: valid device; `info` points at live arrays.
        pass.layout = unsafe { d.create_pipeline_layout(&info, None) }
            .map_err(|r| Error::vk("vkCreatePipelineLayout", r))?;
        let module_info = vk::ShaderModuleCreateInfo::default().code(&words);
        // SAFETY: `words` is a valid SPIR-V module (magic checked; precondition 1).
        let module = unsafe { d.create_shader_module(&module_info, None) }
            .map_err(|r| Error::vk("vkCreateShaderModule", r))?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        let create = [vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(pass.layout)];
        // SAFETY: valid device; `create` points at a live module and layout; the module's
        // entry point and interface match the layout (preconditions 1-3).
        let made = unsafe { d.create_compute_pipelines(vk::PipelineCache::null(), &create, None) };
        // SAFETY: the module is no longer needed once the pipeline is created (or not).
        unsafe { d.destroy_shader_module(module, None) };
        pass.pipeline = made
            .map_err(|(_, r)| Error::vk("vkCreateComputePipelines", r))?
            .first()
            .copied()
            .unwrap_or_default();
        Ok(Arc::new(pass))
    }

    /// Records: the image's transition to `GENERAL` if needed, the dispatch that covers
    /// the image's level 0 with `push` as push constants, and a barrier making the
    /// shader's writes visible to later commands.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `push` is not `push_size` bytes, or the image is
    /// released to the external queue family.
    ///
    /// # Safety
    /// 1. `cmd` is recording, from a pool of this context's queue family.
    /// 2. `target` (and this pass) outlive the command buffer's execution.
    /// 3. As [`ExternalImage::record_release`] precondition 2: command buffers recorded
    ///    with the image are submitted in recording order, each once.
    pub unsafe fn record(
        &self,
        cmd: vk::CommandBuffer,
        target: &ComputeTarget,
        push: &[u8],
    ) -> Result<()> {
        self.check_push(push)?;
        // SAFETY: forwarded to the caller (preconditions 1 and 3).
        unsafe {
            target
                .image
                .record_transition(cmd, vk::ImageLayout::GENERAL)
        }?;
        // SAFETY: forwarded to the caller (preconditions 1 and 2); the image is in GENERAL.
        unsafe { self.record_dispatch(cmd, target, push) }
    }

    /// The context it was made on.
    pub(crate) fn context(&self) -> &Context {
        &self.ctx
    }

    pub(super) fn check_push(&self, push: &[u8]) -> Result<()> {
        if push.len() == self.push_size as usize {
            return Ok(());
        }
        Err(Error::invalid(
            "push",
            format!("{} bytes", push.len()),
            format!("exactly {} bytes (the pass's push_size)", self.push_size),
        ))
    }

    /// The dispatch and its trailing barrier, for an image already in `GENERAL`.
    ///
    /// # Safety
    /// Preconditions 1 and 2 of [`ComputePass::record`]; the target image is in `GENERAL`
    /// when the commands execute.
    pub(super) unsafe fn record_dispatch(
        &self,
        cmd: vk::CommandBuffer,
        target: &ComputeTarget,
        push: &[u8],
    ) -> Result<()> {
        self.check_push(push)?;
        let d = self.ctx.device();
        let e = target.image.desc().extent;
        let groups = [
            e.width.div_ceil(self.workgroup[0]),
            e.height.div_ceil(self.workgroup[1]),
        ];
        // SAFETY: `cmd` is recording (precondition 1); pipeline, layout and set are alive
        // for its execution (precondition 2).
        unsafe { d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, self.pipeline) };
        // SAFETY: as above; the set matches the layout's set 0.
        unsafe {
            d.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                self.layout,
                0,
                &[target.set],
                &[],
            )
        };
        if !push.is_empty() {
            // SAFETY: as above; `push` is exactly the declared range.
            unsafe {
                d.cmd_push_constants(cmd, self.layout, vk::ShaderStageFlags::COMPUTE, 0, push)
            };
        }
        // SAFETY: as above.
        unsafe { d.cmd_dispatch(cmd, groups[0], groups[1], 1) };
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE);
        // SAFETY: as above.
        unsafe {
            d.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            )
        };
        Ok(())
    }
}

/// An image bound as the storage image of a [`ComputePass`]: a view of level 0 and its
/// descriptor set. Holds the pass and the image alive.
pub struct ComputeTarget {
    pool: vk::DescriptorPool,
    set: vk::DescriptorSet,
    view: vk::ImageView,
    image: Arc<ExternalImage>,
    pass: Arc<ComputePass>,
}

impl std::fmt::Debug for ComputeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeTarget")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl Drop for ComputeTarget {
    fn drop(&mut self) {
        let d = self.pass.ctx.device();
        // SAFETY: made from this device; submissions using them have completed (see
        // `ComputePass::record` precondition 2 and `OneShot::dispatch`).
        unsafe { d.destroy_descriptor_pool(self.pool, None) };
        // SAFETY: as above.
        unsafe { d.destroy_image_view(self.view, None) };
    }
}

impl ComputeTarget {
    /// Binds level 0 of a 2D `image` (with `STORAGE` usage) to `pass`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is not 2D or lacks `STORAGE` usage, or is
    /// on another device.
    pub fn new(pass: &Arc<ComputePass>, image: Arc<ExternalImage>) -> Result<Self> {
        let desc = image.desc();
        if desc.kind != ImageKind::D2 || !desc.usage.contains(vk::ImageUsageFlags::STORAGE) {
            return Err(Error::invalid(
                "image",
                format!("{:?} image with usage {:?}", desc.kind, desc.usage),
                "a 2D image with STORAGE usage",
            ));
        }
        pass.ctx.check_owns("image", image.context())?;
        let d = pass.ctx.device();
        let view_info = vk::ImageViewCreateInfo::default()
            .image(image.raw())
            .view_type(vk::ImageViewType::TYPE_2D)
            .format(desc.format)
            .subresource_range(vk::ImageSubresourceRange {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                base_mip_level: 0,
                level_count: 1,
                base_array_layer: 0,
                layer_count: 1,
            });
        // SAFETY: valid device; the image is alive and owned by `image`.
        let view = unsafe { d.create_image_view(&view_info, None) }
            .map_err(|r| Error::vk("vkCreateImageView", r))?;
        let sizes = [vk::DescriptorPoolSize {
            ty: vk::DescriptorType::STORAGE_IMAGE,
            descriptor_count: 1,
        }];
        let pool_info = vk::DescriptorPoolCreateInfo::default()
            .max_sets(1)
            .pool_sizes(&sizes);
        // SAFETY: valid device and create info.
        let pool = match unsafe { d.create_descriptor_pool(&pool_info, None) } {
            Ok(p) => p,
            Err(r) => {
                // SAFETY: the view is unused.
                unsafe { d.destroy_image_view(view, None) };
                return Err(Error::vk("vkCreateDescriptorPool", r));
            }
        };
        let target = |set| Self {
            pool,
            set,
            view,
            image: image.clone(),
            pass: pass.clone(),
        };
        let layouts = [pass.set_layout];
        let alloc = vk::DescriptorSetAllocateInfo::default()
            .descriptor_pool(pool)
            .set_layouts(&layouts);
        // SAFETY: the pool has room for one set of this layout.
        let set = match unsafe { d.allocate_descriptor_sets(&alloc) } {
            Ok(sets) => sets.first().copied().unwrap_or_default(),
            Err(r) => {
                drop(target(vk::DescriptorSet::null()));
                return Err(Error::vk("vkAllocateDescriptorSets", r));
            }
        };
        let image_info = [vk::DescriptorImageInfo::default()
            .image_view(view)
            .image_layout(vk::ImageLayout::GENERAL)];
        let write = vk::WriteDescriptorSet::default()
            .dst_set(set)
            .dst_binding(0)
            .descriptor_type(vk::DescriptorType::STORAGE_IMAGE)
            .image_info(&image_info);
        // SAFETY: the set and view are alive and not in use.
        unsafe { d.update_descriptor_sets(&[write], &[]) };
        Ok(target(set))
    }

    /// The image rendered to.
    pub fn image(&self) -> &Arc<ExternalImage> {
        &self.image
    }

    /// The pass it is bound to.
    pub fn pass(&self) -> &Arc<ComputePass> {
        &self.pass
    }
}
