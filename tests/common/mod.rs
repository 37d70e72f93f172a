//! Shared GPU test harness: adapters, devices, seeded data, buffer upload
//! and readback, and the comparison against the f64 reference.
#![allow(dead_code)]

use wgpu_gradclip::{reference, ClipConfig, ClipGroup, ClipMode, ClipReport, GradView, Norm};

/// Every adapter the tests run on: each distinct Vulkan and GL adapter (or
/// the one named by `WGPU_ADAPTER_NAME` / `WGPU_BACKEND`). Finding none is
/// a failure, never a skip: a skipped GPU test proves nothing.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let chosen_by_env = std::env::var_os("WGPU_ADAPTER_NAME").is_some()
        || std::env::var_os("WGPU_BACKEND").is_some();
    let adapters = if chosen_by_env {
        pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
            &instance, None,
        ))
        .into_iter()
        .collect()
    } else {
        let mut all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let mut seen = std::collections::HashSet::new();
        all.retain(|a| {
            let info = a.get_info();
            seen.insert((info.backend, info.name.clone()))
        });
        all
    };
    assert!(
        !adapters.is_empty(),
        "no GPU adapter found: install a driver (on Debian: apt-get install mesa-vulkan-drivers) \
         or point WGPU_BACKEND / WGPU_ADAPTER_NAME at one"
    );
    adapters
}

pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub name: String,
}

/// A device per adapter with the given limits (clamped to what the adapter
/// offers), so that a test stays within WebGPU's defaults by default.
pub fn gpus_with(limits: impl Fn(&wgpu::Adapter) -> wgpu::Limits) -> Vec<Gpu> {
    adapters()
        .into_iter()
        .map(|adapter| {
            let info = adapter.get_info();
            let (device, queue) = request_device(&adapter, limits(&adapter));
            eprintln!("testing on {} ({:?})", info.name, info.backend);
            Gpu {
                adapter,
                device,
                queue,
                name: format!("{} ({:?})", info.name, info.backend),
            }
        })
        .collect()
}

pub fn request_device(
    adapter: &wgpu::Adapter,
    required_limits: wgpu::Limits,
) -> (wgpu::Device, wgpu::Queue) {
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("wgpu_gradclip.test_device"),
        required_limits,
        ..Default::default()
    }))
    .unwrap_or_else(|e| panic!("device on {}: {e}", adapter.get_info().name))
}

/// WebGPU's default limits, lowered where the adapter offers less.
pub fn default_limits(adapter: &wgpu::Adapter) -> wgpu::Limits {
    let have = adapter.limits();
    let mut l = wgpu::Limits::default();
    l.max_storage_buffers_per_shader_stage = l
        .max_storage_buffers_per_shader_stage
        .min(have.max_storage_buffers_per_shader_stage);
    l.max_storage_buffer_binding_size = l
        .max_storage_buffer_binding_size
        .min(have.max_storage_buffer_binding_size);
    l.max_buffer_size = l.max_buffer_size.min(have.max_buffer_size);
    l.max_compute_workgroup_storage_size = l
        .max_compute_workgroup_storage_size
        .min(have.max_compute_workgroup_storage_size);
    l
}

pub fn gpus() -> Vec<Gpu> {
    gpus_with(default_limits)
}

/// Small deterministic generator (SplitMix64), so cases are reproducible
/// from their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-1, 1) times `scale`.
    pub fn signed(&mut self, scale: f32) -> f32 {
        ((self.unit() * 2.0 - 1.0) as f32) * scale
    }
    /// A value whose magnitude is log-uniform in [10^lo, 10^hi], random sign.
    pub fn magnitude(&mut self, lo: f64, hi: f64) -> f32 {
        let m = 10f64.powf(lo + (hi - lo) * self.unit()) as f32;
        if self.next_u64() & 1 == 0 {
            m
        } else {
            -m
        }
    }
}

/// A buffer's contents as raw bits (so NaN payloads and gap bytes compare
/// exactly) and the buffer on the device.
pub struct TestBuffer {
    pub bits: Vec<u32>,
    pub buffer: wgpu::Buffer,
}

pub fn upload(gpu: &Gpu, bits: Vec<u32>) -> TestBuffer {
    upload_with_usage(
        gpu,
        bits,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    )
}

pub fn upload_with_usage(gpu: &Gpu, bits: Vec<u32>, usage: wgpu::BufferUsages) -> TestBuffer {
    use wgpu::util::DeviceExt;
    let contents: &[u8] = if bits.is_empty() {
        &[0u8; 4]
    } else {
        bytemuck::cast_slice(&bits)
    };
    let buffer = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wgpu_gradclip.test_grads"),
            contents,
            usage,
        });
    TestBuffer { bits, buffer }
}

pub fn download(gpu: &Gpu, buffer: &wgpu::Buffer) -> Vec<u32> {
    let size = buffer.size();
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu_gradclip.test_readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
    gpu.queue.submit([encoder.finish()]);
    let slice = staging.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| r.expect("map readback"));
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    let out = bytemuck::cast_slice(&slice.get_mapped_range().expect("mapped range")).to_vec();
    staging.unmap();
    out
}

/// A view given by buffer index, element offset and element count.
#[derive(Clone, Copy, Debug)]
pub struct ViewAt {
    pub buffer: usize,
    pub elem: u64,
    pub len: u64,
}

pub fn groups_of(buffers: &[TestBuffer], layout: &[(String, Vec<ViewAt>)]) -> Vec<ClipGroup> {
    layout
        .iter()
        .map(|(name, views)| {
            ClipGroup::new(
                name.clone(),
                views
                    .iter()
                    .map(|v| GradView::new(&buffers[v.buffer].buffer, v.elem * 4, v.len)),
            )
        })
        .collect()
}

/// Distance in units in the last place between two f32 (0 for equal bits,
/// and for two NaNs).
pub fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        i64::from(if i < 0 { i32::MIN - i } else { i })
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Relative difference, treating equal non-finite values as equal.
pub fn rel_err(got: f64, want: f64) -> f64 {
    if got.is_nan() && want.is_nan() || got == want {
        return 0.0;
    }
    if !got.is_finite() || !want.is_finite() {
        return f64::INFINITY;
    }
    (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
}

pub const NORM_TOL: f64 = 1e-5;

/// A coefficient is an f32: within 1e-5 relative of the reference, or,
/// where the reference is subnormal in f32 (so 1e-5 is finer than f32 can
/// represent), within 2 ulps of the f32 nearest to it.
pub fn coefficient_ok(got: f32, want: f64) -> bool {
    rel_err(f64::from(got), want) <= NORM_TOL
        || ((want as f32).abs() < f32::MIN_POSITIVE && ulps(got, want as f32) <= GRAD_ULPS)
}
pub const GRAD_ULPS: u64 = 2;

/// Checks a report and the gradients after a clip against the f64
/// reference. `before` holds every buffer's bits before the clip, `after`
/// after it. Panics with the first difference, naming `what`.
pub fn check_clip(
    what: &str,
    config: &ClipConfig,
    layout: &[(String, Vec<ViewAt>)],
    before: &[Vec<u32>],
    after: &[Vec<u32>],
    report: &ClipReport,
) {
    let values = |v: &ViewAt| -> Vec<f32> {
        before[v.buffer][v.elem as usize..(v.elem + v.len) as usize]
            .iter()
            .map(|&b| f32::from_bits(b))
            .collect()
    };
    let group_norms: Vec<f64> = layout
        .iter()
        .map(|(_, views)| {
            let data: Vec<Vec<f32>> = views.iter().map(values).collect();
            let refs: Vec<&[f32]> = data.iter().map(|d| d.as_slice()).collect();
            reference::norm(&refs, config.norm)
        })
        .collect();
    let total = reference::combine_norms(&group_norms, config.norm);
    assert!(
        rel_err(report.total_norm, total) <= NORM_TOL,
        "{what}: total norm {} vs reference {total}",
        report.total_norm
    );
    let total_c = reference::coefficient(total, config.max_norm, config.eps);
    let nonfinite = |n: f64| !n.is_finite();
    let skipped = config.nonfinite == wgpu_gradclip::NonFinitePolicy::Error && nonfinite(total);
    assert_eq!(report.skipped, skipped, "{what}: skipped flag");
    assert_eq!(report.groups.len(), layout.len());
    for (g, ((name, _), gr)) in layout.iter().zip(&report.groups).enumerate() {
        assert_eq!(&gr.name, name);
        assert!(
            rel_err(gr.norm, group_norms[g]) <= NORM_TOL,
            "{what}: group {name} norm {} vs reference {}",
            gr.norm,
            group_norms[g]
        );
        assert_eq!(
            gr.nonfinite,
            nonfinite(group_norms[g]),
            "{what}: group {name} nonfinite flag"
        );
        let want_c = if skipped {
            1.0
        } else if config.mode == ClipMode::Global {
            total_c
        } else {
            reference::coefficient(group_norms[g], config.max_norm, config.eps)
        };
        assert!(
            coefficient_ok(gr.coefficient, want_c),
            "{what}: group {name} coefficient {} vs reference {want_c}",
            gr.coefficient
        );
    }

    // Gradients: g * c inside views (within GRAD_ULPS), bit-identical outside.
    for (b, (pre, post)) in before.iter().zip(after).enumerate() {
        let mut owner: Vec<Option<usize>> = vec![None; pre.len()];
        for (g, (_, views)) in layout.iter().enumerate() {
            for v in views.iter().filter(|v| v.buffer == b) {
                for i in v.elem..v.elem + v.len {
                    owner[i as usize] = Some(g);
                }
            }
        }
        for (i, (&x, &y)) in pre.iter().zip(post).enumerate() {
            match owner[i] {
                None => assert_eq!(
                    x, y,
                    "{what}: buffer {b} element {i} outside every view changed"
                ),
                Some(g) => {
                    let c = report.groups[g].coefficient;
                    let (x, y) = (f32::from_bits(x), f32::from_bits(y));
                    let want = if c == 1.0 { x } else { x * c };
                    assert!(
                        ulps(y, want) <= GRAD_ULPS,
                        "{what}: buffer {b} element {i} (group {}) is {y:e}, want {x:e} * {c:e} = {want:e}",
                        layout[g].0
                    );
                }
            }
        }
    }
}

/// Uploads, plans, runs and checks one case on `gpu`, asserting that wgpu
/// raised no validation error. Returns the report.
pub fn run_case(
    gpu: &Gpu,
    what: &str,
    config: &ClipConfig,
    contents: Vec<Vec<u32>>,
    layout: &[(String, Vec<ViewAt>)],
) -> ClipReport {
    let what = format!("{what} on {}", gpu.name);
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buffers: Vec<TestBuffer> = contents.into_iter().map(|c| upload(gpu, c)).collect();
    let clipper = wgpu_gradclip::GradClipper::new(&gpu.device).expect("clipper");
    let plan = clipper
        .plan(&groups_of(&buffers, layout), config)
        .unwrap_or_else(|e| panic!("{what}: plan: {e}"));
    let report =
        pollster::block_on(plan.run(&gpu.queue)).unwrap_or_else(|e| panic!("{what}: run: {e}"));
    let after: Vec<Vec<u32>> = buffers.iter().map(|b| download(gpu, &b.buffer)).collect();
    let before: Vec<Vec<u32>> = buffers.iter().map(|b| b.bits.clone()).collect();
    if let Some(e) = pollster::block_on(scope.pop()) {
        panic!("{what}: wgpu validation error: {e}");
    }
    check_clip(&what, config, layout, &before, &after, &report);
    report
}

pub fn f32_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// All norms the tests cover.
pub const NORMS: [Norm; 4] = [Norm::L2, Norm::Inf, Norm::P(1.0), Norm::P(3.0)];
