//! Every kind of bad input gives a typed error that names the offending
//! group and view, changes no byte of any buffer, and raises no wgpu
//! validation error. The table in README.md ("Bad input") lists these rows.

mod common;

use common::*;
use wgpu_gradclip::{ClipConfig, ClipGroup, Error, GradClipper, GradView, Norm};

/// Plans `groups` inside a validation error scope, then checks that no
/// buffer changed and no validation error was raised. Returns the error.
fn expect_error(
    gpu: &Gpu,
    buffers: &[TestBuffer],
    groups: &[ClipGroup],
    config: &ClipConfig,
) -> Error {
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let clipper = GradClipper::new(&gpu.device).unwrap();
    let err = match clipper.plan(groups, config) {
        Ok(_) => panic!("plan accepted bad input on {}", gpu.name),
        Err(e) => e,
    };
    assert!(
        pollster::block_on(scope.pop()).is_none(),
        "validation error raised on {}",
        gpu.name
    );
    for b in buffers {
        assert_eq!(
            download(gpu, &b.buffer),
            b.bits,
            "a buffer changed after a refused plan"
        );
    }
    err
}

fn data(gpu: &Gpu, n: usize) -> TestBuffer {
    let mut rng = Rng(n as u64);
    upload(gpu, (0..n).map(|_| rng.signed(1.0).to_bits()).collect())
}

fn ok_group(buffer: &TestBuffer) -> ClipGroup {
    ClipGroup::new("perceiver", [GradView::new(&buffer.buffer, 0, 16)])
}

#[test]
fn view_past_the_end_of_its_buffer() {
    for gpu in gpus() {
        let b = data(&gpu, 100);
        let groups = [
            ok_group(&b),
            ClipGroup::new(
                "xattn",
                [
                    GradView::new(&b.buffer, 64, 10),
                    GradView::new(&b.buffer, 396, 2),
                ],
            ),
        ];
        let err = expect_error(&gpu, &[b], &groups, &ClipConfig::new(1.0));
        assert!(
            matches!(&err, Error::ViewOutOfRange { group, view: 1, end: 404, size: 400, .. } if group == "xattn"),
            "{err}"
        );
        assert!(err.to_string().contains("`xattn` view 1"), "{err}");
    }
}

#[test]
fn offset_not_a_multiple_of_four() {
    for gpu in gpus() {
        let b = data(&gpu, 100);
        let groups = [ClipGroup::new(
            "emb",
            [
                GradView::new(&b.buffer, 0, 4),
                GradView::new(&b.buffer, 18, 4),
            ],
        )];
        let err = expect_error(&gpu, &[b], &groups, &ClipConfig::new(1.0));
        assert!(
            matches!(&err, Error::MisalignedView { group, view: 1, offset: 18 } if group == "emb"),
            "{err}"
        );
    }
}

#[test]
fn duplicate_and_overlapping_views() {
    for gpu in gpus() {
        let b = data(&gpu, 100);
        let dup = [
            ok_group(&b),
            ClipGroup::new("again", [GradView::new(&b.buffer, 0, 16)]),
        ];
        let err = expect_error(&gpu, std::slice::from_ref(&b), &dup, &ClipConfig::new(1.0));
        assert!(matches!(&err, Error::OverlappingViews { .. }), "{err}");
        assert!(
            err.to_string().contains("`perceiver` view 0")
                && err.to_string().contains("`again` view 0"),
            "{err}"
        );

        let overlap = [ClipGroup::new(
            "a",
            [
                GradView::new(&b.buffer, 0, 10),
                GradView::new(&b.buffer, 36, 5),
            ],
        )];
        let err = expect_error(&gpu, &[b], &overlap, &ClipConfig::new(1.0));
        assert!(
            matches!(
                &err,
                Error::OverlappingViews {
                    first_view: 0,
                    second_view: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn buffer_without_storage_usage() {
    for gpu in gpus() {
        let mut rng = Rng(1);
        let bits: Vec<u32> = (0..64).map(|_| rng.signed(1.0).to_bits()).collect();
        let b = upload_with_usage(
            &gpu,
            bits,
            wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        );
        let groups = [ClipGroup::new("lm", [GradView::whole(&b.buffer)])];
        let err = expect_error(&gpu, &[b], &groups, &ClipConfig::new(1.0));
        assert!(
            matches!(&err, Error::MissingStorageUsage { group, view: 0, .. } if group == "lm"),
            "{err}"
        );
    }
}

#[test]
fn buffer_from_another_device() {
    for gpu in gpus() {
        let (device, queue) = request_device(&gpu.adapter, default_limits(&gpu.adapter));
        let other = &Gpu {
            adapter: gpu.adapter.clone(),
            options: gpu.options,
            device,
            queue,
            name: "second device".into(),
        };
        let mine = data(&gpu, 64);
        let foreign = data(other, 64);
        let groups = [
            ok_group(&mine),
            ClipGroup::new("foreign", [GradView::whole(&foreign.buffer)]),
        ];
        let err = expect_error(&gpu, &[mine], &groups, &ClipConfig::new(1.0));
        assert!(
            matches!(&err, Error::ForeignBuffer { group, view: 0, .. } if group == "foreign"),
            "{err}"
        );
        assert_eq!(download(other, &foreign.buffer), foreign.bits);
    }
}

#[test]
fn destroyed_buffer() {
    for gpu in gpus() {
        let mine = data(&gpu, 64);
        let gone = data(&gpu, 64);
        gone.buffer.destroy();
        let groups = [
            ok_group(&mine),
            ClipGroup::new("gone", [GradView::whole(&gone.buffer)]),
        ];
        let err = expect_error(&gpu, &[mine], &groups, &ClipConfig::new(1.0));
        assert!(
            matches!(&err, Error::InvalidBuffer { group, view: 0, .. } if group == "gone"),
            "{err}"
        );
    }
}

#[test]
fn bad_max_norm_norm_order_eps_and_clip_value() {
    for gpu in gpus() {
        let b = data(&gpu, 64);
        let groups = [ok_group(&b)];
        for max_norm in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let err = expect_error(
                &gpu,
                std::slice::from_ref(&b),
                &groups,
                &ClipConfig::new(max_norm),
            );
            assert!(matches!(err, Error::InvalidMaxNorm(_)), "{max_norm}: {err}");
        }
        for p in [0.5, 0.0, -2.0, f32::NAN, 201.0, f32::INFINITY] {
            let err = expect_error(
                &gpu,
                std::slice::from_ref(&b),
                &groups,
                &ClipConfig::new(1.0).norm(Norm::P(p)),
            );
            assert!(matches!(err, Error::InvalidNormOrder(_)), "{p}: {err}");
        }
        for eps in [-1e-6, f32::NAN, f32::INFINITY] {
            let err = expect_error(
                &gpu,
                std::slice::from_ref(&b),
                &groups,
                &ClipConfig::new(1.0).eps(eps),
            );
            assert!(matches!(err, Error::InvalidEps(_)), "{eps}: {err}");
        }
        let clipper = GradClipper::new(&gpu.device).unwrap();
        for c in [0.0, -1.0, f32::NAN] {
            assert!(
                matches!(
                    clipper.plan_value(&groups, c),
                    Err(Error::InvalidClipValue(_))
                ),
                "{c}"
            );
        }
        assert_eq!(download(&gpu, &b.buffer), b.bits);
    }
}

#[test]
fn report_misuse_is_an_error_not_a_hang() {
    for gpu in gpus() {
        let b = data(&gpu, 64);
        let clipper = GradClipper::new(&gpu.device).unwrap();
        let plan = clipper
            .plan(&[ok_group(&b)], &ClipConfig::new(1.0))
            .unwrap();
        assert!(matches!(
            pollster::block_on(plan.read_report()),
            Err(Error::ReportNotRecorded)
        ));
        let sums = [wgpu_gradclip::PowerSum::default(); 2];
        assert!(plan.write_power_sums(&gpu.queue, &sums).is_err());
    }
}

#[test]
fn unsupported_workgroup_size() {
    for gpu in gpus() {
        for (workgroup_size, lanes) in [(0, 1), (48, 16), (512, 512), (64, 0), (64, 12), (64, 128)]
        {
            let options = wgpu_gradclip::ClipperOptions {
                workgroup_size,
                lanes,
            };
            let err = GradClipper::with_options(&gpu.device, options).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedDevice(_)),
                "{options:?}: {err}"
            );
        }
    }
}
