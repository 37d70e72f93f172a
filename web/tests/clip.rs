//! The library's clipping correctness in a real browser: WebGPU in headless
//! Chromium (SwiftShader in CI), checked against the f64 CPU reference.
//!
//! Tolerances:
//! - norms and coefficients within 1e-5 relative of the reference;
//! - each clipped element within 2 ulps of `g * c`, where `c` is the
//!   coefficient the report says was applied (so a coefficient error is
//!   not counted twice);
//! - elements of a group with `c == 1`, and every byte outside the views,
//!   bit-identical to what was uploaded.

#![cfg(target_arch = "wasm32")]

mod common;

use common::{Arena, Rng};
use wasm_bindgen_test::wasm_bindgen_test;
use wgpu_gradclip::{
    reference, ClipConfig, ClipGroup, ClipMode, ClipReport, GradClipper, GradView,
};
use wgpu_gradclip::{NonFinitePolicy, Norm};
use wgpu_gradclip_web::gpu::Gpu;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const REL: f64 = 1e-5;
const ULPS: u64 = 2;

/// Uploads `arena`, clips it with `config`, reads everything back and
/// checks it against the reference. Returns the report for extra checks.
async fn clip_and_check(gpu: &Gpu, arena: &Arena, config: &ClipConfig) -> ClipReport {
    let buffers: Vec<wgpu::Buffer> = arena
        .buffers
        .iter()
        .enumerate()
        .map(|(i, words)| {
            common::storage_buffer(gpu, &format!("wgpu_gradclip_web.test_grads{i}"), words)
        })
        .collect();
    let groups: Vec<ClipGroup> = arena
        .groups
        .iter()
        .map(|(name, views)| {
            ClipGroup::new(
                name.clone(),
                views
                    .iter()
                    .map(|&(b, w, len)| GradView::new(&buffers[b], 4 * w as u64, len as u64)),
            )
        })
        .collect();

    // Every WebGPU call below must be valid: a rejected shader or binding
    // would otherwise show up only as zeros read back.
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let clipper = GradClipper::new(&gpu.device).expect("clipper");
    let plan = clipper.plan(&groups, config).expect("plan");
    let report = plan.run(&gpu.queue).await.expect("clip and report");
    if let Some(e) = scope.pop().await {
        panic!("WebGPU rejected the clip: {e}");
    }
    let mut after = Vec::new();
    for b in &buffers {
        after.push(common::read_words(gpu, b).await);
    }

    check(arena, &after, config, &report);
    report
}

/// Compares a clip's report and output with the f64 reference; panics at
/// the first difference, naming it.
fn check(arena: &Arena, after: &[Vec<u32>], config: &ClipConfig, report: &ClipReport) {
    let norm = config.norm;
    let group_norms: Vec<f64> = arena
        .groups
        .iter()
        .map(|(_, views)| {
            let slices: Vec<&[f32]> = views
                .iter()
                .map(|&(b, w, len)| arena.values(b, w, len))
                .collect();
            reference::norm(&slices, norm)
        })
        .collect();
    let total = reference::combine_norms(&group_norms, norm);
    let skipped = config.nonfinite == NonFinitePolicy::Error && !total.is_finite();

    assert_eq!(
        report.groups.len(),
        arena.groups.len(),
        "one report entry per group"
    );
    assert!(
        common::close(report.total_norm, total, REL),
        "total norm {} vs reference {total}",
        report.total_norm
    );
    assert_eq!(report.skipped, skipped, "report.skipped");

    let mut covered: Vec<Vec<bool>> = arena.buffers.iter().map(|b| vec![false; b.len()]).collect();
    for (g, (name, views)) in arena.groups.iter().enumerate() {
        let got = &report.groups[g];
        assert_eq!(&got.name, name);
        assert!(
            common::close(got.norm, group_norms[g], REL),
            "group `{name}`: norm {} vs reference {}",
            got.norm,
            group_norms[g]
        );
        let want_c = match config.mode {
            ClipMode::Global => reference::coefficient(total, config.max_norm, config.eps),
            ClipMode::PerGroup => {
                reference::coefficient(group_norms[g], config.max_norm, config.eps)
            }
        };
        if !skipped {
            assert!(
                common::close(f64::from(got.coefficient), want_c, REL),
                "group `{name}`: coefficient {} vs reference {want_c}",
                got.coefficient
            );
        }

        let c = got.coefficient;
        let untouched = skipped || c == 1.0;
        for (v, &(b, w, len)) in views.iter().enumerate() {
            for i in 0..len {
                covered[b][w + i] = true;
                let before = arena.buffers[b][w + i];
                let got_bits = after[b][w + i];
                let at = || {
                    format!(
                        "group `{name}` view {v} element {i} (buffer {b} word {})",
                        w + i
                    )
                };
                if untouched {
                    assert_eq!(
                        got_bits,
                        before,
                        "{}: changed from {} to {} though it must be untouched",
                        at(),
                        f32::from_bits(before),
                        f32::from_bits(got_bits)
                    );
                    continue;
                }
                let want = f32::from_bits(before) * c;
                let got_v = f32::from_bits(got_bits);
                let ok = if want.is_nan() {
                    got_v.is_nan()
                } else {
                    common::ulps(got_v, want) <= ULPS
                };
                assert!(
                    ok,
                    "{}: {} * {c} gave {got_v}, want {want}",
                    at(),
                    f32::from_bits(before)
                );
            }
        }
    }

    for (b, words) in arena.buffers.iter().enumerate() {
        for (w, &before) in words.iter().enumerate() {
            if !covered[b][w] {
                assert_eq!(
                    after[b][w], before,
                    "buffer {b} word {w} lies outside every view but was written"
                );
            }
        }
    }
}

/// Many views of awkward sizes in one buffer, with gaps between them: sizes
/// 0, 1, non-multiples of the workgroup and chunk sizes, and hundreds of
/// small views whose dispatch count must not grow with their number.
fn many_views_arena(seed: u64) -> Arena {
    let mut rng = Rng::new(seed);
    let mut arena = Arena::new();
    let buf = arena.buffer(400_000);
    let mut word = 3;
    let mut place = |arena: &mut Arena, rng: &mut Rng, group, len: usize, scale| {
        let values = common::values(rng, len, scale);
        arena.view(group, buf, word, &values);
        word += len + rng.below(5) as usize;
    };

    let perceiver = arena.group("perceiver");
    let xattn0 = arena.group("gated_cross_attn_layers.0");
    let xattn1 = arena.group("gated_cross_attn_layers.1");
    let _empty = arena.group("empty");
    let embeddings = arena.group("input_embeddings");
    for len in [0, 1, 3, 255, 256, 257, 1000, 16383, 16384, 16385, 40001] {
        place(&mut arena, &mut rng, perceiver, len, 0.05);
    }
    for _ in 0..300 {
        let len = 1 + rng.below(300) as usize;
        place(&mut arena, &mut rng, xattn0, len, 0.2);
        // Interleave a second group's views between the first's.
        let len = rng.below(40) as usize;
        place(&mut arena, &mut rng, xattn1, len, 0.001);
    }
    place(&mut arena, &mut rng, embeddings, 70_001, 0.01);
    assert!(word < 400_000, "arena overflow: {word}");
    arena
}

#[wasm_bindgen_test]
async fn global_mode_many_views_in_one_buffer() {
    let gpu = common::device(wgpu::Limits::default()).await;
    for (seed, norm) in [
        (1, Norm::L2),
        (2, Norm::Inf),
        (3, Norm::P(1.0)),
        (4, Norm::P(3.0)),
    ] {
        let arena = many_views_arena(seed);
        let config = ClipConfig::new(0.1).norm(norm).mode(ClipMode::Global);
        let report = clip_and_check(&gpu, &arena, &config).await;
        assert!(
            report.total_coefficient < 1.0,
            "{norm:?}: the test data must need clipping"
        );
    }
}

#[wasm_bindgen_test]
async fn global_mode_below_max_norm_writes_nothing() {
    let gpu = common::device(wgpu::Limits::default()).await;
    let arena = many_views_arena(5);
    let report = clip_and_check(&gpu, &arena, &ClipConfig::new(1e6)).await;
    assert!(!report.any_clipped());
}

#[wasm_bindgen_test]
async fn per_group_mode_clips_each_group_by_its_own_norm() {
    let gpu = common::device(wgpu::Limits::default()).await;
    let arena = many_views_arena(6);
    let config = ClipConfig::new(1.0)
        .mode(ClipMode::PerGroup)
        .nonfinite(NonFinitePolicy::Error);
    let report = clip_and_check(&gpu, &arena, &config).await;

    // The data is scaled so that some groups exceed max_norm and some do not.
    let clipped: Vec<bool> = report.groups.iter().map(|g| g.clipped).collect();
    assert!(
        clipped.contains(&true) && clipped.contains(&false),
        "clipped per group: {clipped:?}"
    );
    for g in &report.groups {
        assert_eq!(g.clipped, g.coefficient != 1.0, "group `{}`", g.name);
    }
}

#[wasm_bindgen_test]
async fn per_group_mode_over_several_buffers() {
    let gpu = common::device(wgpu::Limits::default()).await;
    let mut rng = Rng::new(7);
    let mut arena = Arena::new();
    let bufs: Vec<usize> = (0..11).map(|_| arena.buffer(5000)).collect();
    // More buffers than one dispatch can bind (WebGPU guarantees 8 storage
    // buffers per stage), each group spread over several of them.
    let groups: Vec<usize> = (0..4).map(|g| arena.group(&format!("group{g}"))).collect();
    for (i, &b) in bufs.iter().enumerate() {
        for (k, &g) in groups.iter().enumerate() {
            let len = 1 + rng.below(1200) as usize;
            let values = common::values(&mut rng, len, 0.02 * (1 + 3 * k) as f32);
            arena.view(g, b, 1 + k * 1240 + (i % 3), &values);
        }
    }
    let config = ClipConfig::new(0.8).mode(ClipMode::PerGroup);
    clip_and_check(&gpu, &arena, &config).await;
}

/// NaN in one group, +-infinity in another, a finite group that needs
/// clipping, and an untouched finite group.
fn nonfinite_arena() -> Arena {
    let mut rng = Rng::new(8);
    let mut arena = Arena::new();
    let buf = arena.buffer(20_000);
    let nan = arena.group("has_nan");
    let inf = arena.group("has_inf");
    let big = arena.group("finite_big");
    let small = arena.group("finite_small");

    let mut v = common::values(&mut rng, 3000, 1.0);
    v[1234] = f32::NAN;
    arena.view(nan, buf, 10, &v);
    let mut v = common::values(&mut rng, 2500, 1.0);
    v[7] = f32::INFINITY;
    v[2400] = f32::NEG_INFINITY;
    arena.view(inf, buf, 3100, &v);
    arena.view(big, buf, 6000, &common::values(&mut rng, 5000, 1.0));
    arena.view(small, buf, 12_000, &common::values(&mut rng, 300, 1e-3));
    arena
}

#[wasm_bindgen_test]
async fn nonfinite_propagate_policy_matches_pytorch() {
    let gpu = common::device(wgpu::Limits::default()).await;
    let arena = nonfinite_arena();

    // Per group: NaN spreads through its own group only; infinity zeroes
    // its group's finite elements and turns the infinite ones into NaN.
    let config = ClipConfig::new(1.0)
        .mode(ClipMode::PerGroup)
        .nonfinite(NonFinitePolicy::Propagate);
    let report = clip_and_check(&gpu, &arena, &config).await;
    assert!(report.groups[0].coefficient.is_nan());
    assert_eq!(report.groups[1].coefficient, 0.0);
    assert!(report.groups[2].coefficient < 1.0 && report.groups[2].coefficient > 0.0);
    assert_eq!(report.groups[3].coefficient, 1.0);

    // Globally: the NaN total makes every gradient NaN.
    let config = ClipConfig::new(1.0)
        .mode(ClipMode::Global)
        .nonfinite(NonFinitePolicy::Propagate);
    let report = clip_and_check(&gpu, &arena, &config).await;
    assert!(report.total_coefficient.is_nan());
}

#[wasm_bindgen_test]
async fn nonfinite_error_policy_leaves_every_gradient_untouched() {
    let gpu = common::device(wgpu::Limits::default()).await;
    let arena = nonfinite_arena();
    for mode in [ClipMode::PerGroup, ClipMode::Global] {
        let config = ClipConfig::new(1.0)
            .mode(mode)
            .nonfinite(NonFinitePolicy::Error);
        let report = clip_and_check(&gpu, &arena, &config).await;
        assert!(report.skipped, "{mode:?}");
        assert_eq!(
            report.nonfinite_groups(),
            ["has_nan", "has_inf"],
            "{mode:?}"
        );
        let err = report
            .check_finite()
            .expect_err("check_finite must fail")
            .to_string();
        assert!(
            err.contains("has_nan") && err.contains("has_inf"),
            "{mode:?}: {err}"
        );
    }
}

#[wasm_bindgen_test]
async fn view_larger_than_the_storage_binding_limit() {
    // Ask for a small binding limit. WebGPU raises any request below its
    // default (128 MiB) back to the default, so the test reads the limit it
    // got and sizes the view from that.
    let asked: u32 = 1 << 20;
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: asked as _,
        ..wgpu::Limits::default()
    };
    let gpu = common::device(limits).await;
    let granted = gpu.device.limits();
    let binding = granted.max_storage_buffer_binding_size as u64;
    log::info!(
        "asked max_storage_buffer_binding_size {asked}, got {binding}; max_buffer_size {}",
        granted.max_buffer_size
    );

    // Three windows' worth would be best, but a little over one already
    // forces a split, and the browser caps the buffer size.
    let len = (binding / 4 + 40_003) as usize;
    let words = len + 64;
    assert!(
        (words as u64) * 4 <= granted.max_buffer_size,
        "cannot test: a view over the binding limit ({binding} bytes) needs a buffer larger than \
         max_buffer_size ({})",
        granted.max_buffer_size
    );

    let mut rng = Rng::new(9);
    let mut arena = Arena::new();
    let buf = arena.buffer(words);
    let big = arena.group("big");
    let small = arena.group("small");
    arena.view(big, buf, 5, &common::values(&mut rng, len, 0.01));
    arena.view(small, buf, 5 + len + 2, &common::values(&mut rng, 50, 1.0));
    for mode in [ClipMode::PerGroup, ClipMode::Global] {
        clip_and_check(&gpu, &arena, &ClipConfig::new(1.0).mode(mode)).await;
    }
}
