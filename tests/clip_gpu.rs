//! Clipping on real adapters (lavapipe and GL llvmpipe in CI) against the
//! f64 CPU reference: norms and coefficients within 1e-5 relative, each
//! clipped gradient within 2 ulps of `g * c` for the reported `c`, and
//! every byte outside the views unchanged.

mod common;

use common::*;
use wgpu_gradclip::{ClipConfig, ClipMode, GradClipper, NonFinitePolicy, Norm};

fn random_values(rng: &mut Rng, n: usize, scale: f32) -> Vec<u32> {
    (0..n).map(|_| rng.signed(scale).to_bits()).collect()
}

fn one_view(n: u64) -> Vec<(String, Vec<ViewAt>)> {
    vec![(
        "all".into(),
        vec![ViewAt {
            buffer: 0,
            elem: 0,
            len: n,
        }],
    )]
}

#[test]
fn sizes_and_norms_single_view() {
    for gpu in gpus() {
        let mut rng = Rng(1);
        for n in [0u64, 1, 3, 4, 255, 1025, 70_001] {
            for norm in NORMS {
                for max_norm in [1e-3f32, 1e9] {
                    let config = ClipConfig::new(max_norm).norm(norm);
                    let data = random_values(&mut rng, n as usize, 2.0);
                    run_case(
                        &gpu,
                        &format!("n={n} {norm:?} max_norm={max_norm}"),
                        &config,
                        vec![data],
                        &one_view(n),
                    );
                }
            }
        }
    }
}

/// Many views in one arena, with gaps, in 7 groups, both modes.
fn arena_layout(
    rng: &mut Rng,
    n_views: usize,
    n_groups: usize,
) -> (Vec<u32>, Vec<(String, Vec<ViewAt>)>) {
    let mut groups: Vec<(String, Vec<ViewAt>)> = (0..n_groups)
        .map(|g| (format!("gated_cross_attn_layers.{g}"), Vec::new()))
        .collect();
    let mut elem = 0u64;
    for _ in 0..n_views {
        elem += rng.below(3);
        let len = rng.below(700);
        let g = rng.below(n_groups as u64) as usize;
        groups[g].1.push(ViewAt {
            buffer: 0,
            elem,
            len,
        });
        elem += len;
    }
    let data = random_values(rng, elem as usize + 5, 0.5);
    (data, groups)
}

#[test]
fn many_views_in_one_arena() {
    for gpu in gpus() {
        let mut rng = Rng(2);
        for mode in [ClipMode::Global, ClipMode::PerGroup] {
            for norm in [Norm::L2, Norm::P(3.0), Norm::Inf] {
                let (data, layout) = arena_layout(&mut rng, 400, 7);
                let config = ClipConfig::new(0.3).mode(mode).norm(norm);
                let report = run_case(
                    &gpu,
                    &format!("arena {mode:?} {norm:?}"),
                    &config,
                    vec![data],
                    &layout,
                );
                assert!(
                    report.any_clipped(),
                    "max_norm 0.3 should clip these groups"
                );
            }
        }
    }
}

#[test]
fn many_separate_buffers() {
    for gpu in gpus() {
        let mut rng = Rng(3);
        for mode in [ClipMode::Global, ClipMode::PerGroup] {
            let mut contents = Vec::new();
            let mut layout: Vec<(String, Vec<ViewAt>)> =
                (0..5).map(|g| (format!("g{g}"), Vec::new())).collect();
            for b in 0..40 {
                let len = 1 + rng.below(3000);
                contents.push(random_values(&mut rng, len as usize + 3, 1.0));
                layout[b % 5].1.push(ViewAt {
                    buffer: b,
                    elem: rng.below(3),
                    len,
                });
            }
            let config = ClipConfig::new(2.0).mode(mode);
            run_case(
                &gpu,
                &format!("buffers {mode:?}"),
                &config,
                contents,
                &layout,
            );
        }
    }
}

#[test]
fn magnitudes_from_subnormal_to_f32_max() {
    for gpu in gpus() {
        let mut rng = Rng(4);
        let cases: Vec<(&str, Vec<u32>)> = vec![
            (
                "subnormal",
                (0..5000)
                    .map(|_| rng.magnitude(-44.0, -38.5).to_bits())
                    .collect(),
            ),
            (
                "tiny",
                (0..5000)
                    .map(|_| rng.magnitude(-30.0, -20.0).to_bits())
                    .collect(),
            ),
            (
                "huge",
                (0..5000)
                    .map(|_| rng.magnitude(30.0, 38.0).to_bits())
                    .collect(),
            ),
            ("f32 max", vec![f32::MAX.to_bits(); 3]),
            (
                "f32 max and tiny",
                [f32::MAX, 1e-30, -f32::MAX, 0.0]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            ),
            (
                "mixed",
                (0..20_000)
                    .map(|_| rng.magnitude(-40.0, 38.0).to_bits())
                    .collect(),
            ),
            ("zeros", vec![0; 1000]),
        ];
        for (name, data) in cases {
            let n = data.len() as u64;
            for norm in NORMS {
                let config = ClipConfig::new(1.0).norm(norm);
                let report = run_case(
                    &gpu,
                    &format!("{name} {norm:?}"),
                    &config,
                    vec![data.clone()],
                    &one_view(n),
                );
                assert!(
                    report.total_norm.is_finite(),
                    "{name} {norm:?}: norm must stay finite"
                );
            }
        }
    }
}

#[test]
fn nonfinite_under_each_policy_and_mode() {
    for gpu in gpus() {
        let mut rng = Rng(5);
        for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for mode in [ClipMode::Global, ClipMode::PerGroup] {
                for policy in [NonFinitePolicy::Propagate, NonFinitePolicy::Error] {
                    let mut data = random_values(&mut rng, 3000, 1.0);
                    data[1234] = poison.to_bits();
                    let layout = vec![
                        (
                            "clean".to_string(),
                            vec![ViewAt {
                                buffer: 0,
                                elem: 0,
                                len: 1000,
                            }],
                        ),
                        (
                            "poisoned".to_string(),
                            vec![ViewAt {
                                buffer: 0,
                                elem: 1000,
                                len: 2000,
                            }],
                        ),
                    ];
                    let config = ClipConfig::new(0.5).mode(mode).nonfinite(policy);
                    let what = format!("{poison} {mode:?} {policy:?}");
                    let report = run_case(&gpu, &what, &config, vec![data], &layout);
                    assert_eq!(report.nonfinite_groups(), vec!["poisoned"], "{what}");
                    assert!(report.check_finite().is_err());
                }
            }
        }
    }
}

#[test]
fn small_device_limits_split_views_and_grids() {
    // A 1 MiB storage binding, 4 storage buffers per stage (2 gradient
    // slots) and 64 workgroups per grid dimension: views several bindings
    // long and grids folded over two dimensions.
    let gpus = gpus_with(|a| wgpu::Limits {
        max_storage_buffer_binding_size: 1 << 20,
        max_storage_buffers_per_shader_stage: 4,
        max_compute_workgroups_per_dimension: 64,
        ..default_limits(a)
    });
    for gpu in gpus {
        let clipper = GradClipper::new(&gpu.device).unwrap();
        assert_eq!(clipper.grad_bindings_per_dispatch(), 2);
        let mut rng = Rng(6);
        let n = 900_000u64; // 3.4 MiB
        let mut layout = vec![
            (
                "big".to_string(),
                vec![ViewAt {
                    buffer: 0,
                    elem: 3,
                    len: n,
                }],
            ),
            ("others".to_string(), vec![]),
        ];
        let mut contents = vec![random_values(&mut rng, n as usize + 10, 1.0)];
        for b in 1..6 {
            contents.push(random_values(&mut rng, 1000, 1.0));
            layout[1].1.push(ViewAt {
                buffer: b,
                elem: 1,
                len: 998,
            });
        }
        for mode in [ClipMode::Global, ClipMode::PerGroup] {
            let config = ClipConfig::new(1.0).mode(mode).chunk_elements(4096);
            run_case(
                &gpu,
                &format!("small limits {mode:?}"),
                &config,
                contents.clone(),
                &layout,
            );
        }
    }
}

#[test]
fn repeated_runs_are_bit_identical() {
    for gpu in gpus() {
        let mut rng = Rng(7);
        let (data, layout) = arena_layout(&mut rng, 200, 4);
        let buffers = vec![upload(&gpu, data)];
        let groups = groups_of(&buffers, &layout);
        let clipper = GradClipper::new(&gpu.device).unwrap();
        // max_norm high enough not to clip, so the input is the same each run.
        let plan = clipper
            .plan(&groups, &ClipConfig::new(1e30).mode(ClipMode::PerGroup))
            .unwrap();
        let first = pollster::block_on(plan.run(&gpu.queue)).unwrap();
        for _ in 0..5 {
            let again = pollster::block_on(plan.run(&gpu.queue)).unwrap();
            assert_eq!(first, again);
        }
        // Clipping two fresh copies gives bit-identical gradients.
        let copies: Vec<_> = (0..2)
            .map(|_| vec![upload(&gpu, buffers[0].bits.clone())])
            .collect();
        let results: Vec<Vec<u32>> = copies
            .iter()
            .map(|b| {
                let plan = clipper
                    .plan(
                        &groups_of(b, &layout),
                        &ClipConfig::new(0.1).mode(ClipMode::PerGroup),
                    )
                    .unwrap();
                assert!(pollster::block_on(plan.run(&gpu.queue))
                    .unwrap()
                    .any_clipped());
                download(&gpu, &b[0].buffer)
            })
            .collect();
        assert_eq!(results[0], results[1]);
    }
}

#[test]
fn two_halves_combine_shards_like_one_global_clip() {
    for gpu in gpus() {
        let mut rng = Rng(8);
        let data = random_values(&mut rng, 20_000, 1.0);
        // "Rank" 0 and 1 each hold half of one group; the combined clip must
        // equal a global clip over the whole.
        let whole = one_view(20_000);
        let config = ClipConfig::new(1.0);
        let reference_buffers = vec![upload(&gpu, data.clone())];
        let clipper = GradClipper::new(&gpu.device).unwrap();
        let want = pollster::block_on(
            clipper
                .plan(&groups_of(&reference_buffers, &whole), &config)
                .unwrap()
                .run(&gpu.queue),
        )
        .unwrap();
        let want_grads = download(&gpu, &reference_buffers[0].buffer);

        let shards = vec![
            upload(&gpu, data[..7000].to_vec()),
            upload(&gpu, data[7000..].to_vec()),
        ];
        let plans: Vec<_> = [(0usize, 7000u64), (1, 13_000)]
            .iter()
            .map(|&(b, n)| {
                let layout = vec![(
                    "all".to_string(),
                    vec![ViewAt {
                        buffer: b,
                        elem: 0,
                        len: n,
                    }],
                )];
                clipper.plan(&groups_of(&shards, &layout), &config).unwrap()
            })
            .collect();
        let mut sums = Vec::new();
        for plan in &plans {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            plan.record_norms(&mut enc);
            plan.record_report(&mut enc).unwrap();
            gpu.queue.submit([enc.finish()]);
            sums.push(pollster::block_on(plan.read_report()).unwrap().groups[0].power_sum);
        }
        let combined = sums[0].combine(&sums[1], Norm::L2);
        assert!(rel_err(combined.norm(Norm::L2), want.total_norm) <= NORM_TOL);
        let mut got = Vec::new();
        for plan in &plans {
            plan.write_power_sums(&gpu.queue, &[combined]).unwrap();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            plan.record_clip_with_norms(&mut enc);
            plan.record_report(&mut enc).unwrap();
            gpu.queue.submit([enc.finish()]);
            let r = pollster::block_on(plan.read_report()).unwrap();
            assert_eq!(r.total_coefficient, want.total_coefficient);
        }
        for s in &shards {
            got.extend(download(&gpu, &s.buffer));
        }
        assert_eq!(got, want_grads, "sharded clip differs from the global clip");
    }
}

#[test]
fn value_clipping_clamps_and_keeps_nan() {
    for gpu in gpus() {
        let mut rng = Rng(9);
        let mut data = random_values(&mut rng, 5000, 3.0);
        data[10] = f32::NAN.to_bits();
        data[11] = f32::NEG_INFINITY.to_bits();
        let buffers = vec![upload(&gpu, data.clone())];
        let layout = vec![(
            "all".to_string(),
            vec![ViewAt {
                buffer: 0,
                elem: 2,
                len: 4990,
            }],
        )];
        wgpu_gradclip::clip_grad_value(
            &gpu.device,
            &gpu.queue,
            &groups_of(&buffers, &layout)[0].views,
            1.0,
        )
        .unwrap();
        let after = download(&gpu, &buffers[0].buffer);
        for (i, (&x, &y)) in data.iter().zip(&after).enumerate() {
            let (x, y) = (f32::from_bits(x), f32::from_bits(y));
            let want = if !(2..4992).contains(&i) || x.is_nan() {
                x
            } else {
                x.clamp(-1.0, 1.0)
            };
            assert_eq!(
                y.to_bits(),
                want.to_bits(),
                "element {i}: {x} -> {y}, want {want}"
            );
        }
    }
}

#[test]
fn empty_plans_and_groups() {
    for gpu in gpus() {
        let clipper = GradClipper::new(&gpu.device).unwrap();
        let plan = clipper.plan(&[], &ClipConfig::new(1.0)).unwrap();
        assert_eq!(plan.dispatch_count(), 0);
        let report = pollster::block_on(plan.run(&gpu.queue)).unwrap();
        assert_eq!(report.total_norm, 0.0);

        let mut rng = Rng(10);
        let layout = vec![
            ("empty".to_string(), vec![]),
            (
                "zero-length".to_string(),
                vec![ViewAt {
                    buffer: 0,
                    elem: 5,
                    len: 0,
                }],
            ),
            (
                "real".to_string(),
                vec![ViewAt {
                    buffer: 0,
                    elem: 8,
                    len: 100,
                }],
            ),
        ];
        let config = ClipConfig::new(0.1).mode(ClipMode::PerGroup);
        let report = run_case(
            &gpu,
            "empty groups",
            &config,
            vec![random_values(&mut rng, 120, 1.0)],
            &layout,
        );
        assert_eq!(report.groups[0].norm, 0.0);
        assert_eq!(report.groups[0].coefficient, 1.0);
        assert!(report.groups[2].clipped);
    }
}

#[test]
fn one_shot_matches_pytorch_signature() {
    for gpu in gpus() {
        let mut rng = Rng(11);
        let data = random_values(&mut rng, 4096, 1.0);
        let buffers = vec![upload(&gpu, data.clone())];
        let views = groups_of(&buffers, &one_view(4096))[0].views.clone();
        let total =
            wgpu_gradclip::clip_grad_norm(&gpu.device, &gpu.queue, &views, 1.0, Norm::L2).unwrap();
        let values: Vec<f32> = data.iter().map(|&b| f32::from_bits(b)).collect();
        let want = wgpu_gradclip::reference::norm(&[&values], Norm::L2);
        assert!(
            rel_err(f64::from(total), want) <= NORM_TOL,
            "{total} vs {want}"
        );
    }
}

#[test]
fn every_workgroup_size_gives_the_same_answers() {
    for mut gpu in gpus() {
        for wg in wgpu_gradclip::shaders::WORKGROUP_SIZES {
            // One team (the GPU walk), teams of 8 (the CPU walk), and
            // single-invocation teams.
            for lanes in [wg, 8, 1] {
                gpu.options = wgpu_gradclip::ClipperOptions {
                    workgroup_size: wg,
                    lanes,
                };
                let mut rng = Rng(14);
                let (data, layout) = arena_layout(&mut rng, 150, 5);
                for norm in NORMS {
                    let config = ClipConfig::new(0.3).mode(ClipMode::PerGroup).norm(norm);
                    run_case(
                        &gpu,
                        &format!("workgroup size {wg}, lanes {lanes}, {norm:?}"),
                        &config,
                        vec![data.clone()],
                        &layout,
                    );
                }
            }
        }
    }
}

#[test]
fn offsets_aligned_to_four_bytes_only() {
    // Engines sub-allocate at 4-byte granularity; the device's storage
    // offset alignment (256 by default) must not matter.
    for gpu in gpus() {
        let mut rng = Rng(15);
        let data = random_values(&mut rng, 3000, 1.0);
        let layout: Vec<(String, Vec<ViewAt>)> = [1u64, 5, 67, 255, 1001]
            .iter()
            .enumerate()
            .map(|(i, &elem)| {
                (
                    format!("at byte {}", elem * 4),
                    vec![ViewAt {
                        buffer: 0,
                        elem,
                        len: 3 + i as u64,
                    }],
                )
            })
            .collect();
        let config = ClipConfig::new(0.1).mode(ClipMode::PerGroup);
        let report = run_case(&gpu, "4-byte offsets", &config, vec![data], &layout);
        assert!(report.groups.iter().all(|g| g.clipped));
    }
}
