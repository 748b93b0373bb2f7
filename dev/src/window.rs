//! `demo --window` (feature `window`): the demo pipeline live in a winit window. Vulkan
//! renders each frame, CUDA tone-maps it in place (where a CUDA device matches the Vulkan
//! device), and a [`Presenter`] blits it to the window's swapchain: one more Vulkan
//! submission after the frame's consuming batch, on the same queue. Without CUDA the
//! Vulkan render is presented alone.
//!
//! The title shows frames/s and host time per frame. Esc or closing the window ends it;
//! resizing re-renders at the new size. For tests: `--frames N` stops after N frames,
//! `--resize-at FRAME WxH` asks winit for a new inner size at that frame, `--hold` keeps
//! the window (showing the last frame) open until standard input ends, and the last frame
//! shown is printed (`shown: frame K WxH`) with its CPU reference written to
//! `--out DIR/window-frame-K.png`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use vkcuda::ash::vk;
use vkcuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use vkcuda::interop::{FrameSync, FrameSyncDesc, QueueLayout, SharedImage, SyncMode};
use vkcuda::util::{Commands, ComputePass, ComputeTarget, OneShot};
use vkcuda::vulkan::{
    self, ExternalImage, ImageDesc, PresentMode, PresentOutcome, PresentTarget, Presenter,
    PresenterDesc,
};
use vkcuda::{cuda, Error};
use winit::application::ApplicationHandler;
use winit::dpi::PhysicalSize;
use winit::event::{ElementState, KeyEvent, WindowEvent};
use winit::event_loop::{ActiveEventLoop, ControlFlow, EventLoop, EventLoopProxy};
use winit::keyboard::{Key, NamedKey};
use winit::raw_window_handle::{HasDisplayHandle, HasWindowHandle, RawWindowHandle};
use winit::window::{Window, WindowId};

use super::pipeline::Options;
use super::{png, scene};

/// The window-only options of `demo --window`.
pub struct Args {
    /// Run until the window closes (no `--frames` given).
    until_closed: bool,
    /// At frame `.0`, ask for an inner size of `.1` x `.2`.
    resize_at: Option<(u32, u32, u32)>,
    mode: PresentMode,
    hold: bool,
}

impl Args {
    /// Splits `args` into the demo's own options and the window ones; `None` without
    /// `--window`.
    pub fn take(args: &[String]) -> Result<Option<(Vec<String>, Args)>> {
        if !args.iter().any(|a| a == "--window") {
            return Ok(None);
        }
        let mut w = Args {
            until_closed: !args.iter().any(|a| a == "--frames"),
            resize_at: None,
            mode: PresentMode::Fifo,
            hold: false,
        };
        let mut rest = Vec::new();
        let mut it = args.iter().cloned();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--window" => {}
                "--hold" => w.hold = true,
                "--resize-at" => {
                    let frame = value()?.parse().context("--resize-at FRAME")?;
                    let (width, height) = super::parse_size(&value()?)?;
                    w.resize_at = Some((frame, width, height));
                }
                "--present-mode" => {
                    w.mode = match value()?.as_str() {
                        "fifo" => PresentMode::Fifo,
                        "mailbox" => PresentMode::Mailbox,
                        "immediate" => PresentMode::Immediate,
                        other => bail!("--present-mode {other}: use fifo, mailbox or immediate"),
                    }
                }
                _ => rest.push(a),
            }
        }
        Ok(Some((rest, w)))
    }
}

/// Sent from the `--hold` thread when standard input ends.
struct StdinClosed;

/// Runs the windowed demo until the window closes, Esc, or `--frames` (then `--hold`).
pub fn run(o: Options, w: Args) -> Result<()> {
    if o.batch != 1 || o.trace.is_some() {
        bail!("--window presents every frame: it takes neither --batch K (K > 1) nor --trace");
    }
    let event_loop = EventLoop::<StdinClosed>::with_user_event()
        .build()
        .context("no window system (set DISPLAY or WAYLAND_DISPLAY)")?;
    event_loop.set_control_flow(ControlFlow::Poll);
    let display = event_loop.display_handle()?.as_raw();
    let desc = vulkan::ContextDesc {
        present: Some(PresentTarget::Display(display)),
        ..Default::default()
    };
    let vk = vulkan::Context::new(&desc).context("no Vulkan device that can present here")?;
    println!("Vulkan: {} ({})", vk.identity().name, vk.identity().uuid);
    let cu = match cuda::Context::matching(vk.identity()) {
        Ok(cu) if vk.can_export_semaphore_fds() => {
            println!(
                "CUDA: device #{} {} matches by UUID",
                cu.ordinal(),
                cu.name()
            );
            Some(cu)
        }
        Ok(_) => {
            println!("CUDA: matches, but this Vulkan device cannot export semaphores.");
            None
        }
        Err(e @ (Error::Missing { .. } | Error::NoMatchingCudaDevice { .. })) => {
            println!("CUDA: not available ({e}).");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if cu.is_none() {
        println!("      Presenting the Vulkan render only. Not done here: the CUDA tone map of the shared image (needs an NVIDIA GPU whose UUID matches the Vulkan device, and semaphore fds)");
    }
    let mut app = App {
        proxy: Some(event_loop.create_proxy()),
        o,
        w,
        vk,
        cu,
        live: None,
        frame: 0,
        shown: None,
        holding: false,
        stats: Stats::new(),
        error: None,
    };
    event_loop.run_app(&mut app)?;
    if let Some(e) = app.error {
        return Err(e);
    }
    app.finish()
}

/// What renders a frame into an image the presenter shows.
enum Renderer {
    /// Vulkan alone: one compute dispatch per frame, host-paced.
    Vulkan(Arc<ComputeTarget>),
    /// Vulkan render -> CUDA tone map in place -> Vulkan acquire, through FrameSync.
    Cuda(Box<CudaFrames>),
}

/// One frame slot of the CUDA path.
struct Slot {
    target: Arc<ComputeTarget>,
    shared: SharedImage,
    surface: cuda::SurfaceObject,
    produce: Commands,
    consume: Commands,
}

struct CudaFrames {
    // First: dropping it waits for every frame before the slots' images and imports go.
    sync: FrameSync,
    slots: Vec<Slot>,
    tonemap: vkcuda::cudarc::driver::CudaFunction,
    launch: LaunchConfig,
}

/// The window and everything sized to it.
struct Live {
    renderer: Renderer,
    size: (u32, u32),
    presenter: Presenter,
    window: Arc<Window>,
}

struct App {
    proxy: Option<EventLoopProxy<StdinClosed>>,
    o: Options,
    w: Args,
    vk: vulkan::Context,
    cu: Option<cuda::Context>,
    live: Option<Live>,
    /// Next scene frame number.
    frame: u32,
    /// Last frame presented, at its size.
    shown: Option<(u32, u32, u32)>,
    /// `--frames` reached with `--hold`: the window stays, nothing is presented.
    holding: bool,
    stats: Stats,
    error: Option<anyhow::Error>,
}

/// Frames/s and host time per frame over the last half second, for the title.
struct Stats {
    since: Instant,
    frames: u32,
    host: Duration,
}

impl Stats {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            frames: 0,
            host: Duration::ZERO,
        }
    }

    /// Counts a frame; every half second returns the title text and starts again.
    fn frame(&mut self, host: Duration) -> Option<String> {
        self.frames += 1;
        self.host += host;
        let elapsed = self.since.elapsed();
        if elapsed < Duration::from_millis(500) {
            return None;
        }
        let text = format!(
            "{:.0} fps, {:.2} ms host/frame",
            f64::from(self.frames) / elapsed.as_secs_f64(),
            self.host.as_secs_f64() * 1e3 / f64::from(self.frames)
        );
        *self = Self::new();
        Some(text)
    }
}

fn render_target(
    vk: &vulkan::Context,
    pass: &Arc<ComputePass>,
    (w, h): (u32, u32),
) -> Result<ComputeTarget> {
    let desc = ImageDesc::d2(w, h, vk::Format::R8G8B8A8_UNORM);
    Ok(ComputeTarget::new(
        pass,
        Arc::new(ExternalImage::new(vk, &desc)?),
    )?)
}

/// The window title: what runs, and `stats`.
fn title(cuda: bool, stats: &str) -> String {
    let what = if cuda {
        "Vulkan render -> CUDA tone map -> present"
    } else {
        "Vulkan render -> present (no CUDA)"
    };
    format!("vkcuda demo: {what}: {stats}")
}

impl App {
    fn renderer(&self, size: (u32, u32)) -> Result<Renderer> {
        let vk = &self.vk;
        let pass = scene::render_pass(vk)?;
        let Some(cu) = &self.cu else {
            return Ok(Renderer::Vulkan(Arc::new(render_target(vk, &pass, size)?)));
        };
        let tonemap = cu
            .compile("postprocess.cu", scene::POSTPROCESS_CU)?
            .load_function("tonemap")?;
        let slots = (0..self.o.in_flight)
            .map(|_| -> Result<Slot> {
                let target = Arc::new(render_target(vk, &pass, size)?);
                let shared = SharedImage::from_vulkan(target.image().clone(), cu)?;
                Ok(Slot {
                    surface: shared.surface(0)?,
                    target,
                    shared,
                    produce: Commands::new(vk)?,
                    consume: Commands::new(vk)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mode = if self.o.low_latency {
            SyncMode::LowLatency
        } else {
            SyncMode::Semaphores
        };
        // One queue for all of an image's Vulkan work, present included (see Presenter).
        let desc = FrameSyncDesc::new(self.o.in_flight)
            .mode(mode)
            .lanes(QueueLayout::Single, 1);
        Ok(Renderer::Cuda(Box::new(CudaFrames {
            slots,
            tonemap,
            launch: LaunchConfig {
                grid_dim: (size.0.div_ceil(16), size.1.div_ceil(16), 1),
                block_dim: (16, 16, 1),
                shared_mem_bytes: 0,
            },
            sync: FrameSync::new(vk, cu, &desc)?,
        })))
    }

    fn open(&mut self, event_loop: &ActiveEventLoop) -> Result<()> {
        let attrs = Window::default_attributes()
            .with_title(title(self.cu.is_some(), "starting"))
            .with_inner_size(PhysicalSize::new(self.o.width, self.o.height));
        let window = Arc::new(event_loop.create_window(attrs)?);
        let inner = window.inner_size();
        let size = (inner.width, inner.height);
        let desc = PresenterDesc::new(size.0, size.1).mode(self.w.mode);
        let presenter = Presenter::new(&self.vk, window.clone(), &desc)?;
        if let Ok(h) = window.window_handle() {
            match h.as_raw() {
                RawWindowHandle::Xlib(x) => println!("window: x11 {:#x}", x.window),
                RawWindowHandle::Xcb(x) => println!("window: x11 {:#x}", x.window),
                other => println!("window: {other:?}"),
            }
        }
        println!(
            "presenter: {:?} {:?}, {:?}",
            presenter.format().map(|f| f.format),
            presenter.extent(),
            self.w.mode
        );
        self.live = Some(Live {
            renderer: self.renderer(size)?,
            size,
            presenter,
            window,
        });
        Ok(())
    }

    /// Re-renders at the window's new size; the presenter recreates its swapchain.
    fn resized(&mut self, width: u32, height: u32) -> Result<()> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        live.presenter.resize(width, height);
        if width == 0 || height == 0 || live.size == (width, height) {
            return Ok(());
        }
        println!("resized: {width}x{height} at frame {}", self.frame);
        let renderer = self.renderer((width, height))?;
        if let Some(live) = &mut self.live {
            live.renderer = renderer;
            live.size = (width, height);
        }
        Ok(())
    }

    /// Renders, processes and presents the next frame.
    fn draw(&mut self, event_loop: &ActiveEventLoop) -> Result<()> {
        if self.holding {
            return Ok(());
        }
        if let Some((at, width, height)) = self.w.resize_at {
            if at == self.frame {
                let live = self.live.as_ref().context("no window")?;
                if let Some(now) = live
                    .window
                    .request_inner_size(PhysicalSize::new(width, height))
                {
                    self.resized(now.width, now.height)?;
                }
            }
        }
        let start = Instant::now();
        let frame = self.frame;
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let (width, height) = live.size;
        let push = scene::push_constants(frame, width, height);
        let outcome = match &mut live.renderer {
            Renderer::Vulkan(target) => {
                self.vk.dispatch(target.pass(), target, &push)?;
                live.presenter.present(target.image(), 0, &[])?
            }
            Renderer::Cuda(c) => {
                let mut f = c.sync.begin()?;
                let slot = &mut c.slots[f.slot()];
                slot.produce.dispatch(&slot.target, &push)?;
                slot.produce.release_image(slot.shared.vulkan())?;
                f.submit_commands(&mut slot.produce)?;
                let stream = f.cuda_wait()?;
                let mut kernel = stream.launch_builder(&c.tonemap);
                kernel.arg(&slot.surface).arg(&width).arg(&height);
                // SAFETY: tonemap(cudaSurfaceObject_t, uint, uint) reads and writes texels
                // inside width x height of the surface's level, alive (held by the slot).
                unsafe { kernel.launch(c.launch) }?;
                f.cuda_signal()?;
                slot.consume
                    .acquire_image(slot.shared.vulkan(), vk::ImageLayout::GENERAL)?;
                let (_, queue) = f.queues();
                f.submit_commands_after_cuda(&mut slot.consume)?;
                live.presenter.present(slot.shared.vulkan(), queue, &[])?
            }
        };
        if matches!(
            outcome,
            PresentOutcome::Presented | PresentOutcome::Suboptimal
        ) {
            self.shown = Some((frame, width, height));
        }
        self.frame += 1;
        if let Some(stats) = self.stats.frame(start.elapsed()) {
            live.window.set_title(&title(self.cu.is_some(), &stats));
        }
        if !self.w.until_closed && self.frame >= self.o.frames {
            live.presenter.wait_idle(Duration::from_secs(10))?;
            self.report()?;
            if self.w.hold {
                self.holding = true;
                self.hold_until_stdin_ends();
            } else {
                event_loop.exit();
            }
        }
        Ok(())
    }

    /// Prints the frame shown and writes its CPU reference.
    fn report(&self) -> Result<()> {
        let Some((frame, width, height)) = self.shown else {
            bail!("no frame was presented");
        };
        let (texels, what) = if self.cu.is_some() {
            (
                scene::processed_reference(frame, width, height),
                "render + tone curve",
            )
        } else {
            (scene::reference(frame, width, height), "render")
        };
        let path = self.o.out.join(format!("window-frame-{frame:04}.png"));
        png::write(&path, width, height, &texels)?;
        let recreations = self.live.as_ref().map_or(0, |l| l.presenter.recreations());
        println!("presenter: swapchain created {recreations} times");
        println!(
            "shown: frame {frame} {width}x{height}; its CPU reference ({what}): {}",
            path.display()
        );
        Ok(())
    }

    /// `--hold`: a thread that wakes the event loop when standard input ends.
    fn hold_until_stdin_ends(&mut self) {
        let Some(proxy) = self.proxy.take() else {
            return;
        };
        println!("holding: the window stays until standard input ends");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = proxy.send_event(StdinClosed);
        });
    }

    fn finish(&self) -> Result<()> {
        if let Some(n) = self.vk.validation_errors() {
            println!(
                "validation errors: {n} {:?}",
                self.vk.validation_errors_by_id().unwrap_or_default()
            );
        }
        println!("closed after {} frames", self.frame);
        Ok(())
    }

    /// Keeps the first error and ends the loop.
    fn check(&mut self, event_loop: &ActiveEventLoop, r: Result<()>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
            event_loop.exit();
        }
    }
}

impl ApplicationHandler<StdinClosed> for App {
    fn resumed(&mut self, event_loop: &ActiveEventLoop) {
        if self.live.is_none() {
            let r = self.open(event_loop);
            self.check(event_loop, r);
        }
    }

    fn user_event(&mut self, event_loop: &ActiveEventLoop, _: StdinClosed) {
        event_loop.exit();
    }

    fn window_event(&mut self, event_loop: &ActiveEventLoop, _: WindowId, event: WindowEvent) {
        let r = match event {
            WindowEvent::CloseRequested
            | WindowEvent::KeyboardInput {
                event:
                    KeyEvent {
                        logical_key: Key::Named(NamedKey::Escape),
                        state: ElementState::Pressed,
                        ..
                    },
                ..
            } => {
                event_loop.exit();
                Ok(())
            }
            WindowEvent::Resized(size) => self.resized(size.width, size.height),
            WindowEvent::RedrawRequested => self.draw(event_loop),
            _ => Ok(()),
        };
        self.check(event_loop, r);
    }

    fn about_to_wait(&mut self, _: &ActiveEventLoop) {
        if let Some(live) = &self.live {
            if !self.holding {
                live.window.request_redraw();
            }
        }
    }

    fn exiting(&mut self, _: &ActiveEventLoop) {
        // Presenter, renderer and window go before the event loop: the presenter drains
        // its presents, then destroys the swapchain and surface, then lets the window go.
        self.live = None;
    }
}
