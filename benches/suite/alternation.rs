//! The alternation floor, measured in every run so that the other benches' figures can be
//! read against it on any machine: with the host spinning between steps and no cross-API
//! wait,
//! * `fill_alone/family F`: a 4 KiB `vkCmdFillBuffer` on a queue of family F, submit to
//!   fence;
//! * `kernel_alone`: an empty CUDA kernel (NVRTC), launch to completion;
//! * `alternating/family F`: one fill then one kernel per iteration,
//!
//! for the main (graphics/compute) family and, where the device has one, a transfer-only
//! family (a copy engine). Prints criterion's report, then a table of p50/p99 per step from
//! [`alternation_floor`] and the switch pair each family pays. With `VKCUDA_TRACE_DIR` set it
//! also writes the alternating loop of each family as a Perfetto trace there
//! (`alternation-<queue>.json`). Without a GPU it registers nothing and says why.

use crate::common;

use std::time::Duration;

use common::{record, Samples};
use criterion::{BenchmarkId, Criterion};
use vkcuda::interop::{alternation_floor, alternation_trace, FillStep, FloorReport, KernelStep};
use vkcuda::vulkan::{ContextDesc, QueueId};
use vkcuda::{cuda, vulkan};

/// Iterations of each [`alternation_floor`] measurement behind the table.
const TABLE_ITERATIONS: usize = 2_000;

/// Iterations of each trace.
const TRACE_ITERATIONS: usize = 500;

fn queues(vk: &vulkan::Context) -> Vec<QueueId> {
    let mut q = vec![QueueId::Main(0)];
    if vk.transfer_family().is_some() {
        q.push(QueueId::Transfer);
    }
    q
}

fn bench_steps(
    c: &mut Criterion,
    samples: &Samples,
    (vk, cu): &(vulkan::Context, cuda::Context),
) -> anyhow::Result<()> {
    let mut g = c.benchmark_group("alternation");
    let mut kernel = KernelStep::new(cu)?;
    g.bench_function("kernel_alone", |b| {
        b.iter_custom(|iters| {
            let t: Duration = (0..iters).map(|_| kernel.run().expect("kernel step")).sum();
            record(samples, "kernel_alone", t, iters);
            t
        })
    });
    for queue in queues(vk) {
        let mut fill = FillStep::new(vk, queue)?;
        let family = format!("family {}", fill.family());
        g.bench_function(BenchmarkId::new("fill_alone", &family), |b| {
            b.iter_custom(|iters| {
                let t: Duration = (0..iters).map(|_| fill.run().expect("fill step")).sum();
                record(samples, &format!("fill_alone/{family}"), t, iters);
                t
            })
        });
        g.bench_function(BenchmarkId::new("alternating", &family), |b| {
            b.iter_custom(|iters| {
                let t: Duration = (0..iters)
                    .map(|_| fill.run().expect("fill step") + kernel.run().expect("kernel step"))
                    .sum();
                record(samples, &format!("alternating/{family}"), t, iters);
                t
            })
        });
    }
    g.finish();
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_table(reports: &[FloorReport]) {
    println!("\n| step (host spinning, no cross-API wait) | p50 | p99 |");
    println!("|---|---|---|");
    let Some(first) = reports.first() else {
        return;
    };
    println!(
        "| CUDA empty kernel alone | {:.1} us | {:.1} us |",
        us(first.kernel_alone.p50),
        us(first.kernel_alone.p99)
    );
    for r in reports {
        let kind = if r.transfer_only {
            "transfer-only"
        } else {
            "graphics/compute"
        };
        println!(
            "| Vulkan fill alone (family {}, {kind}) | {:.1} us | {:.1} us |",
            r.family,
            us(r.fill_alone.p50),
            us(r.fill_alone.p99)
        );
        println!(
            "| fill (family {}) <-> kernel alternating | {:.1} us | {:.1} us |",
            r.family,
            us(r.alternating.p50),
            us(r.alternating.p99)
        );
    }
    println!("\n| Vulkan family | switch pair (alternating - fill alone - kernel alone, p50) |");
    println!("|---|---|");
    for r in reports {
        println!("| {} | {:.1} us |", r.family, us(r.switch_pair()));
    }
    println!("\n{TABLE_ITERATIONS} iterations per row, after a warm-up.");
}

/// Runs this group's benchmarks, then prints its table(s).
pub fn run() {
    let desc = ContextDesc {
        transfer_queue: true,
        ..ContextDesc::default()
    };
    let Some(env) = common::gpu_env_with("alternation", &desc) else {
        return;
    };
    let (vk, cu) = &env;
    println!(
        "alternation bench on {} (main family {}, transfer-only family {:?})",
        vk.identity().name,
        vk.queue_family_index(),
        vk.transfer_family()
    );
    let samples = Samples::default();
    let mut c = common::criterion();
    if let Err(e) = bench_steps(&mut c, &samples, &env) {
        println!("steps skipped: {e:#}");
    }
    c.final_summary();
    let mut reports = Vec::new();
    for queue in queues(vk) {
        match alternation_floor(vk, cu, queue, TABLE_ITERATIONS) {
            Ok(r) => reports.push(r),
            Err(e) => println!("floor on {queue:?} skipped: {e:#}"),
        }
    }
    print_table(&reports);
    if let Some(dir) = std::env::var_os("VKCUDA_TRACE_DIR") {
        for queue in queues(vk) {
            let path = std::path::Path::new(&dir).join(format!("alternation-{queue:?}.json"));
            match alternation_trace(vk, cu, queue, TRACE_ITERATIONS)
                .and_then(|t| t.write_json(&path))
            {
                Ok(()) => println!("trace of {queue:?} written to {}", path.display()),
                Err(e) => println!("trace of {queue:?} skipped: {e:#}"),
            }
        }
    }
}
