//! Shared by the toy GPU tests: the adapter (a missing one fails the test),
//! running a list of dispatches on a small arena, seeded inputs and
//! comparisons that name the first element that differs.
#![allow(dead_code)]

use wgpu_gradclip::toy::kernels::{Dispatch, Kernels, Memory, Program};
use wgpu_gradclip::toy::native;

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub kernels: Kernels,
}

/// The adapter the environment selects, with the kernels the trainer would
/// pick for it. A machine without one fails here: GPU tests never skip.
pub fn gpu() -> Gpu {
    open(false)
}

/// As `gpu`, with the portable kernels only (no subgroup kernels).
pub fn gpu_portable() -> Gpu {
    open(true)
}

fn open(portable: bool) -> Gpu {
    pollster::block_on(async {
        let (device, queue, _) = native::open_device().await.unwrap_or_else(|e| {
            panic!(
                "{e}\nGPU tests need an adapter: install mesa-vulkan-drivers \
                 (apt-get install -y mesa-vulkan-drivers) on a machine without a GPU"
            )
        });
        let kernels = if portable {
            Kernels::portable(&device).await
        } else {
            Kernels::new(&device).await
        }
        .expect("toy kernels build");
        Gpu {
            device,
            queue,
            kernels,
        }
    })
}

/// Bump allocator for test tensors (4-aligned, as the kernels need).
#[derive(Default)]
pub struct Arena {
    pub data: Vec<f32>,
}

impl Arena {
    pub fn put(&mut self, values: &[f32]) -> u32 {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(values);
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0.0);
        }
        off
    }

    pub fn zeros(&mut self, n: usize) -> u32 {
        self.put(&vec![0.0; n])
    }
}

impl Gpu {
    /// Uploads `arena` and `ints`, runs `ops` in order, returns the arena.
    pub fn run(&self, arena: &Arena, ints: &[u32], ops: &[Dispatch]) -> Vec<f32> {
        let memory = Memory::new(
            &self.kernels,
            arena.data.len() as u64 + 4,
            ints.len() as u64 + 4,
        )
        .expect("test arena fits");
        self.queue
            .write_buffer(&memory.mem, 0, bytemuck::cast_slice(&arena.data));
        if !ints.is_empty() {
            let mut words = ints.to_vec();
            while !words.len().is_multiple_of(4) {
                words.push(0);
            }
            self.queue
                .write_buffer(&memory.ints, 0, bytemuck::cast_slice(&words));
        }
        let program = Program::new(&self.kernels, ops);
        let size = arena.data.len() as u64 * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("toy_test.staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        program.record(&memory, &mut encoder);
        encoder.copy_buffer_to_buffer(&memory.mem, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map succeeds"));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device polls");
        let out =
            bytemuck::cast_slice::<u8, f32>(&slice.get_mapped_range().expect("mapped")).to_vec();
        out
    }
}

/// Seeded normal values scaled by `scale`.
pub fn randn(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut rng = wgpu_gradclip::toy::data::Rng::new(seed);
    (0..n)
        .map(|_| (f64::from(rng.normal()) * scale) as f32)
        .collect()
}

/// Asserts |got - want| <= atol + rtol * |want| everywhere, naming the first
/// element that fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i} is {g}, expected {w} (error {err:.3e})"
        );
    }
}

pub fn slice(mem: &[f32], off: u32, n: usize) -> &[f32] {
    &mem[off as usize..off as usize + n]
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// Central-difference gradient of `f` at `x` (f64 throughout).
pub fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + h;
            let a = f(&xp);
            xp[i] = x0 - h;
            let b = f(&xp);
            xp[i] = x0;
            (a - b) / (2.0 * h)
        })
        .collect()
}

/// erf in f64: its Maclaurin series below |x| = 2, and above, where the
/// series' alternating terms would cancel away the digits, 1 - erfc from
/// erfc's continued fraction (80 terms, exact to about 1e-16 there).
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    if a >= 2.0 {
        let mut k = a;
        for n in (1..=80).rev() {
            k = a + (f64::from(n) / 2.0) / k;
        }
        let erfc = (-a * a).exp() / (std::f64::consts::PI.sqrt() * k);
        return (1.0 - erfc).copysign(x);
    }
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

pub fn gelu(u: f64) -> f64 {
    0.5 * u * (1.0 + erf(u / std::f64::consts::SQRT_2))
}

/// LayerNorm of each row of `x` ([m, n]).
pub fn layer_norm(x: &[f64], n: usize, g: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(n) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        out.extend(
            row.iter()
                .enumerate()
                .map(|(c, v)| (v - mean) * rstd * g[c] + b[c]),
        );
    }
    out
}
