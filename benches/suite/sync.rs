//! Vulkan -> CUDA -> Vulkan hand-offs, each with a CUDA kernel in the frame (32 MiB read and
//! written) and, labelled beside them, with empty work: the naive semaphore chain against
//! `FrameSync` (semaphore mode and low-latency mode), in one run.
//!
//! * `latency`: one hand-off at a time (Vulkan batch signals, CUDA waits and signals, a
//!   second Vulkan batch waits), from the first submission until the host sees the last
//!   batch finish; p50/p99 of every hand-off timed.
//! * `throughput`: hand-offs pipelined with N = 1..4 in flight; the naive chain is one
//!   queue, one stream and one semaphore pair (as a straightforward program writes it),
//!   `FrameSync` has one chain per slot.
//! * `layouts`: 4 frames in flight in both modes over every queue layout, with one stream
//!   and with a stream per slot: what overlaps and what does not.
//! * `host_wait`: a CUDA stream blocked on a host flag signals a timeline value when
//!   released; the host releases it and at once waits for the value: `vkWaitSemaphores`
//!   (naive) against the spinning `Semaphore::wait`, from the release until the
//!   wait returns (so the wait starts before the signal, as in a real frame loop).
//!
//! Prints criterion's report, then a markdown table with the naive variants beside vkcuda's.
//! Without a GPU it registers nothing and says why.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ash::vk;
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::{sys, CudaStream, LaunchConfig, PushKernelArg};
use vkcuda::cuda;
use vkcuda::interop::{FrameSync, FrameSyncDesc, QueueLayout, SharedSemaphore, SyncMode};
use vkcuda::vulkan::{self, Semaphore, SemaphoreKind};

const KERNELS: &str = vkcuda_dev::shaders::SYNC_CU;
const TIMEOUT: Duration = Duration::from_secs(10);
const ALL: vk::PipelineStageFlags = vk::PipelineStageFlags::ALL_COMMANDS;

/// Every timed quantity, for the table: hand-off or wait times (seconds each), and
/// pipelined runs as (hand-offs, seconds).
#[derive(Default)]
struct Results {
    times: BTreeMap<String, Vec<f64>>,
    runs: BTreeMap<String, (u64, f64)>,
}

type Shared = Arc<Mutex<Results>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Results> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i])
}

/// What CUDA does in each frame: nothing (`empty`, labelled so), or a kernel that touches
/// a frame's worth of memory (`kernel`; 32 MiB read and written, like a 4K RGBA8 tone map).
#[derive(Clone, Copy)]
enum WorkKind {
    Kernel,
    Empty,
}

impl WorkKind {
    fn label(self) -> &'static str {
        match self {
            WorkKind::Kernel => "kernel",
            WorkKind::Empty => "empty",
        }
    }
}

const WORK: [WorkKind; 2] = [WorkKind::Kernel, WorkKind::Empty];

/// The frame's kernel and the memory it touches.
struct Work {
    touch: cudarc::driver::CudaFunction,
    region: cudarc::driver::CudaSlice<u32>,
}

impl Work {
    const WORDS: usize = 8 << 20;

    fn new(cu: &cuda::Context) -> anyhow::Result<Self> {
        let touch = cu.compile("sync.cu", KERNELS)?.load_function("touch")?;
        let region = cu.cuda().default_stream().alloc_zeros::<u32>(Self::WORDS)?;
        Ok(Self { touch, region })
    }

    /// Enqueues the frame's CUDA work of `kind` on `stream`.
    fn run(&mut self, kind: WorkKind, stream: &Arc<CudaStream>) {
        if let WorkKind::Kernel = kind {
            let n = Self::WORDS as u64;
            let mut k = stream.launch_builder(&self.touch);
            k.arg(&mut self.region).arg(&n);
            let cfg = LaunchConfig {
                grid_dim: (1024, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: touch(uint*, u64) writes the first `n` words of `region`, which holds
            // exactly `n`; the slice outlives the launch (it lives as long as the bench).
            unsafe { k.launch(cfg) }.expect("launch touch");
        }
    }
}

/// The naive chain: one queue (0), one stream, one semaphore pair, and a Vulkan-only
/// timeline the last batch signals (what the host waits on).
struct Naive {
    vk: vulkan::Context,
    to_cuda: SharedSemaphore,
    to_vulkan: SharedSemaphore,
    done: Semaphore,
    stream: Arc<CudaStream>,
    value: u64,
}

impl Naive {
    fn new(vk: &vulkan::Context, cu: &cuda::Context) -> anyhow::Result<Self> {
        Ok(Self {
            vk: vk.clone(),
            to_cuda: SharedSemaphore::timeline(vk, cu, 0)?,
            to_vulkan: SharedSemaphore::timeline(vk, cu, 0)?,
            done: Semaphore::local(vk, SemaphoreKind::Timeline, 0)?,
            stream: cu.new_stream()?,
            value: 0,
        })
    }

    /// Starts one hand-off after waiting until at most `in_flight - 1` are unfinished;
    /// returns its value.
    fn hand_off(&mut self, in_flight: u64, work: &mut Work, kind: WorkKind) -> anyhow::Result<u64> {
        let v = self.value + 1;
        if v > in_flight {
            self.done.wait(v - in_flight, TIMEOUT)?;
        }
        // SAFETY: no command buffers; the semaphores outlive the batches (`Drop` drains);
        // CUDA waits for the signal right after.
        unsafe {
            self.vk
                .submit(&[], &[], &[(self.to_cuda.vulkan(), v)], vk::Fence::null())
        }?;
        self.to_cuda.cuda().wait(&self.stream, v)?;
        work.run(kind, &self.stream);
        self.to_vulkan.cuda().signal(&self.stream, v)?;
        // SAFETY: as above; CUDA's signal of `v` is enqueued.
        unsafe {
            self.vk.submit(
                &[],
                &[(self.to_vulkan.vulkan(), v, ALL)],
                &[(&self.done, v)],
                vk::Fence::null(),
            )
        }?;
        self.value = v;
        Ok(v)
    }
}

impl Drop for Naive {
    fn drop(&mut self) {
        if let Err(e) = self.done.wait(self.value, TIMEOUT) {
            eprintln!("naive chain did not finish: {e}");
        }
        let queue = match self.vk.queue() {
            Ok(q) => q,
            Err(e) => return eprintln!("locking queue 0: {e}"),
        };
        // SAFETY: the queue is locked; waiting for it lets the semaphores go.
        if let Err(e) = unsafe { self.vk.device().queue_wait_idle(*queue) } {
            eprintln!("vkQueueWaitIdle: {e}");
        }
    }
}

/// One frame through a FrameSync (no Vulkan work; CUDA work of `kind`); returns its value.
fn frame(sync: &mut FrameSync, work: &mut Work, kind: WorkKind) -> anyhow::Result<u64> {
    let mut f = sync.begin()?;
    // SAFETY: no command buffers, semaphores or fence.
    unsafe { f.submit_vulkan(&[], &[], &[], vk::Fence::null()) }?;
    let stream = f.cuda_wait()?;
    work.run(kind, &stream);
    f.cuda_signal()?;
    // SAFETY: as above.
    Ok(unsafe { f.submit_vulkan_after_cuda(&[], &[], &[], vk::Fence::null()) }?)
}

fn mode_name(mode: SyncMode) -> &'static str {
    match mode {
        SyncMode::Semaphores => "framesync-semaphores",
        SyncMode::LowLatency => "framesync-low-latency",
    }
}

fn bench_latency(
    c: &mut Criterion,
    results: &Shared,
    (vk, cu): &(vulkan::Context, cuda::Context),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group("latency");
    g.throughput(Throughput::Elements(1));
    let mut work = Work::new(cu)?;
    for kind in WORK {
        let w = kind.label();
        let mut naive = Naive::new(vk, cu)?;
        g.bench_function(format!("{w}/naive"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let v = naive.hand_off(1, &mut work, kind).expect("naive hand-off");
                    naive.done.wait(v, TIMEOUT).expect("naive wait");
                    let took = t.elapsed();
                    lock(results)
                        .times
                        .entry(format!("latency/{w}/naive"))
                        .or_default()
                        .push(took.as_secs_f64());
                    total += took;
                }
                total
            })
        });
        drop(naive);
        for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
            let name = mode_name(mode);
            let mut sync = FrameSync::new(vk, cu, &FrameSyncDesc::new(1).mode(mode))?;
            g.bench_function(format!("{w}/{name}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let v = frame(&mut sync, &mut work, kind).expect("frame");
                        sync.wait_frame(v, TIMEOUT).expect("wait_frame");
                        let took = t.elapsed();
                        lock(results)
                            .times
                            .entry(format!("latency/{w}/{name}"))
                            .or_default()
                            .push(took.as_secs_f64());
                        total += took;
                    }
                    total
                })
            });
        }
    }
    g.finish();
    Ok(())
}

fn record_run(results: &Shared, key: String, iters: u64, took: Duration) {
    let mut r = lock(results);
    let e = r.runs.entry(key).or_default();
    e.0 += iters;
    e.1 += took.as_secs_f64();
}

fn bench_throughput(
    c: &mut Criterion,
    results: &Shared,
    (vk, cu): &(vulkan::Context, cuda::Context),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Elements(1));
    let mut work = Work::new(cu)?;
    for kind in WORK {
        let w = kind.label();
        for n in 1..=4u64 {
            let mut naive = Naive::new(vk, cu)?;
            g.bench_function(BenchmarkId::new(format!("{w}/naive-chained"), n), |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    let mut last = 0;
                    for _ in 0..iters {
                        last = naive.hand_off(n, &mut work, kind).expect("naive hand-off");
                    }
                    naive.done.wait(last, TIMEOUT).expect("naive wait");
                    let took = t.elapsed();
                    record_run(results, format!("throughput/{w}/naive/{n}"), iters, took);
                    took
                })
            });
            drop(naive);
            for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
                let name = mode_name(mode);
                let desc = FrameSyncDesc::new(n as usize).mode(mode);
                let mut sync = FrameSync::new(vk, cu, &desc)?;
                g.bench_function(BenchmarkId::new(format!("{w}/{name}"), n), |b| {
                    b.iter_custom(|iters| {
                        let took = run_frames(&mut sync, iters, &mut work, kind);
                        record_run(results, format!("throughput/{w}/{name}/{n}"), iters, took);
                        took
                    })
                });
            }
        }
    }
    g.finish();
    Ok(())
}

/// Runs `iters` frames (CUDA work of `kind`) through `sync` and waits for them: wall time.
fn run_frames(sync: &mut FrameSync, iters: u64, work: &mut Work, kind: WorkKind) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        frame(sync, work, kind).expect("frame");
    }
    sync.wait_idle(TIMEOUT).expect("wait_idle");
    t.elapsed()
}

fn bench_layouts(
    c: &mut Criterion,
    results: &Shared,
    (vk, cu): &(vulkan::Context, cuda::Context),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group("layouts");
    g.throughput(Throughput::Elements(1));
    let mut work = Work::new(cu)?;
    for kind in WORK {
        let w = kind.label();
        for mode in [SyncMode::Semaphores, SyncMode::LowLatency] {
            for layout in LAYOUTS {
                for streams in [1, 4] {
                    let desc = FrameSyncDesc::new(4).mode(mode).lanes(layout, streams);
                    let mut sync = FrameSync::new(vk, cu, &desc)?;
                    let id = format!("{w}/{}/{layout:?}x{streams}", mode_name(mode));
                    g.bench_function(&id, |b| {
                        b.iter_custom(|iters| {
                            let took = run_frames(&mut sync, iters, &mut work, kind);
                            record_run(results, format!("layouts/{id}"), iters, took);
                            took
                        })
                    });
                }
            }
        }
    }
    g.finish();
    Ok(())
}

const LAYOUTS: [QueueLayout; 3] = [
    QueueLayout::PerSlot,
    QueueLayout::Single,
    QueueLayout::Split,
];

fn bench_host_wait(
    c: &mut Criterion,
    results: &Shared,
    (vk, cu): &(vulkan::Context, cuda::Context),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group("host_wait");
    g.sample_size(10);
    let tl = SharedSemaphore::timeline(vk, cu, 0)?;
    let stream = cu.new_stream()?;
    let wait_flag = cu.compile("sync.cu", KERNELS)?.load_function("wait_flag")?;
    let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
    // SAFETY: the word is written below before any kernel reads it.
    let mut flag = unsafe { cu.cuda().alloc_pinned_with_flags::<u32>(1, flags) }?;
    let host = flag.as_mut_ptr()?;
    // With unified addressing (every 64-bit Linux system) a mapped page-locked
    // allocation has the same address on the device as on the host.
    let device = host as u64;
    // SAFETY: a live, aligned allocation of one u32.
    unsafe { host.write_volatile(0) };
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut value = 0u32;
    type Wait = fn(&Semaphore, u64, Duration) -> vkcuda::Result<()>;
    let variants: [(&str, Wait); 2] = [
        ("vkWaitSemaphores", Semaphore::wait_blocking),
        ("fast-wait", Semaphore::wait),
    ];
    for (name, wait) in variants {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    value += 1;
                    let mut launch = stream.launch_builder(&wait_flag);
                    launch.arg(&device).arg(&value);
                    // SAFETY: wait_flag(const volatile uint*, uint) reads one word of the
                    // live page-locked allocation until the host writes `value` below.
                    unsafe { launch.launch(one) }.expect("launch wait_flag");
                    tl.cuda()
                        .signal(&stream, u64::from(value))
                        .expect("CUDA signal");
                    // Let the kernel start spinning, as GPU work in progress would.
                    std::thread::sleep(Duration::from_micros(200));
                    let t = Instant::now();
                    // SAFETY: as above; the kernel only reads the word.
                    unsafe { host.write_volatile(value) };
                    wait(tl.vulkan(), u64::from(value), TIMEOUT).expect("host wait");
                    let took = t.elapsed();
                    lock(results)
                        .times
                        .entry(format!("host_wait/{name}"))
                        .or_default()
                        .push(took.as_secs_f64());
                    total += took;
                }
                total
            })
        });
    }
    g.finish();
    stream.synchronize()?;
    drop(flag);
    Ok(())
}

fn print_table(results: &Shared) {
    let r = lock(results);
    let us = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.1} us", s * 1e6));
    let times = |k: &str| r.times.get(k).map(Vec::as_slice).unwrap_or(&[]);
    let rate = |k: String| {
        r.runs
            .get(&k)
            .filter(|(n, s)| *n > 0 && *s > 0.0)
            .map_or("-".to_owned(), |(n, s)| format!("{:.0}/s", *n as f64 / s))
    };
    for kind in WORK {
        let w = kind.label();
        let what = match kind {
            WorkKind::Kernel => "a 32 MiB CUDA kernel in every frame",
            WorkKind::Empty => {
                "EMPTY work: no kernel, crossings only; beside the kernel rows, not a pipeline"
            }
        };
        println!("\n| hand-offs, {what} | naive | FrameSync semaphores | FrameSync low-latency |");
        println!("|---|---|---|---|");
        for (label, p) in [
            ("hand-off latency p50", 0.5),
            ("hand-off latency p99", 0.99),
        ] {
            println!(
                "| {label} | {} | {} | {} |",
                us(percentile(times(&format!("latency/{w}/naive")), p)),
                us(percentile(
                    times(&format!("latency/{w}/framesync-semaphores")),
                    p
                )),
                us(percentile(
                    times(&format!("latency/{w}/framesync-low-latency")),
                    p
                )),
            );
        }
        for n in 1..=4 {
            println!(
                "| pipelined hand-offs, {n} in flight | {} (chained) | {} | {} |",
                rate(format!("throughput/{w}/naive/{n}")),
                rate(format!("throughput/{w}/framesync-semaphores/{n}")),
                rate(format!("throughput/{w}/framesync-low-latency/{n}")),
            );
        }
        println!("\n| 4 in flight, {what}: lanes (queue layout x streams) | FrameSync semaphores | FrameSync low-latency |");
        println!("|---|---|---|");
        for layout in LAYOUTS {
            for streams in [1, 4] {
                println!(
                    "| {layout:?} x {streams} | {} | {} |",
                    rate(format!(
                        "layouts/{w}/framesync-semaphores/{layout:?}x{streams}"
                    )),
                    rate(format!(
                        "layouts/{w}/framesync-low-latency/{layout:?}x{streams}"
                    )),
                );
            }
        }
    }
    println!("\n| host wait on a CUDA-signalled value | vkWaitSemaphores | fast wait | goal |");
    println!("|---|---|---|---|");
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        println!(
            "| {label} | {} | {} | {} |",
            us(percentile(times("host_wait/vkWaitSemaphores"), p)),
            us(percentile(times("host_wait/fast-wait"), p)),
            if p == 0.5 { "<= 20 us" } else { "" },
        );
    }
    let counts: Vec<String> = r
        .times
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.len()))
        .collect();
    println!("\nsamples: {}", counts.join(", "));
}

/// Runs this group's benchmarks, then prints its table(s).
pub fn run() {
    let Some(env) = common::gpu_env("sync") else {
        return;
    };
    println!(
        "sync bench on {} ({} Vulkan queue(s))",
        env.0.identity().name,
        env.0.queue_count()
    );
    let results = Shared::default();
    let mut c = common::select(Criterion::default().configure_from_args())
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1));
    type Bench =
        fn(&mut Criterion, &Shared, &(vulkan::Context, cuda::Context)) -> anyhow::Result<()>;
    let benches: [(&str, Bench); 4] = [
        ("latency", bench_latency),
        ("throughput", bench_throughput),
        ("layouts", bench_layouts),
        ("host_wait", bench_host_wait),
    ];
    for (name, bench) in benches {
        if let Err(e) = bench(&mut c, &results, &env) {
            println!("{name} skipped: {e:#}");
        }
    }
    c.final_summary();
    print_table(&results);
}
