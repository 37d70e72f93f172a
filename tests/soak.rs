//! A long soak: one plan recorded, submitted and read back 20,000 times.
//! It lives in its own test binary so that the host memory it measures is
//! its own and not that of tests running beside it.

mod common;

use common::*;
use wgpu_gradclip::{ClipConfig, ClipMode, GradClipper};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// 20,000 record-submit-read cycles of one plan: no growth in wgpu's
/// resource counts or memory, flat host memory, identical results.
#[test]
fn soak_twenty_thousand_cycles() {
    let cycles: usize = std::env::var("GRADCLIP_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let gpu = gpus().into_iter().next().expect("an adapter");
    let mut rng = Rng(99);
    let data: Vec<u32> = (0..50_000).map(|_| rng.signed(1.0).to_bits()).collect();
    let pristine = upload(&gpu, data.clone());
    let grads = upload(&gpu, data);
    let layout = vec![
        (
            "perceiver".to_string(),
            vec![ViewAt {
                buffer: 0,
                elem: 0,
                len: 20_000,
            }],
        ),
        (
            "gated_cross_attn_layers.0".to_string(),
            vec![ViewAt {
                buffer: 0,
                elem: 20_001,
                len: 29_000,
            }],
        ),
    ];
    let groups = groups_of(std::slice::from_ref(&grads), &layout);
    let clipper = GradClipper::new(&gpu.device).unwrap();
    let plan = clipper
        .plan(&groups, &ClipConfig::new(5.0).mode(ClipMode::PerGroup))
        .unwrap();

    let cycle = || {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(
            &pristine.buffer,
            0,
            &grads.buffer,
            0,
            pristine.buffer.size(),
        );
        plan.record(&mut enc);
        plan.record_report(&mut enc).unwrap();
        gpu.queue.submit([enc.finish()]);
        pollster::block_on(plan.read_report()).unwrap()
    };
    let first = cycle();
    assert!(first.any_clipped(), "the soak must exercise the scale pass");
    let first_grads = download(&gpu, &grads.buffer);

    let warm = cycles / 10;
    let mut counters_at_warm = None;
    let mut rss_at_warm = 0;
    for i in 1..cycles {
        let report = cycle();
        assert_eq!(report, first, "cycle {i} reported something else");
        if std::env::var_os("GRADCLIP_SOAK_TRACE").is_some() && i % 2000 == 0 {
            eprintln!(
                "cycle {i}: rss {} MiB, {:?}",
                rss_bytes() >> 20,
                gpu.device
                    .get_internal_counters()
                    .hal
                    .command_encoders
                    .read()
            );
        }
        if i == warm {
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .unwrap();
            counters_at_warm = Some(gpu.device.get_internal_counters());
            rss_at_warm = rss_bytes();
        }
    }
    assert_eq!(
        download(&gpu, &grads.buffer),
        first_grads,
        "gradients differ after {cycles} cycles"
    );

    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let before = counters_at_warm.expect("warm-up reached");
    let after = gpu.device.get_internal_counters();
    // Resource counts: the only things created per cycle are command
    // encoders and buffers, which must all have been freed again.
    let pairs = [
        (
            "buffers",
            before.hal.buffers.read(),
            after.hal.buffers.read(),
        ),
        (
            "bind groups",
            before.hal.bind_groups.read(),
            after.hal.bind_groups.read(),
        ),
        (
            "compute pipelines",
            before.hal.compute_pipelines.read(),
            after.hal.compute_pipelines.read(),
        ),
        (
            "command encoders",
            before.hal.command_encoders.read(),
            after.hal.command_encoders.read(),
        ),
        (
            "buffer memory",
            before.hal.buffer_memory.read(),
            after.hal.buffer_memory.read(),
        ),
        (
            "memory allocations",
            before.hal.memory_allocations.read(),
            after.hal.memory_allocations.read(),
        ),
    ];
    for (what, b, a) in pairs {
        assert!(
            a <= b,
            "{what} grew from {b} to {a} over {} cycles",
            cycles - warm
        );
    }
    let rss = rss_bytes();
    assert!(
        rss <= rss_at_warm + (8 << 20),
        "host memory grew from {rss_at_warm} to {rss} bytes over {} cycles",
        cycles - warm
    );
}
