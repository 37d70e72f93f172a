//! Helpers shared by the browser tests: a device, seeded data, readback and
//! tolerance checks.

#![allow(dead_code)]

use wgpu::util::DeviceExt;
use wgpu_gradclip_web::gpu::{self, Gpu};

/// Opens the browser's WebGPU device. A missing adapter fails the test: in
/// CI headless Chromium always has SwiftShader, so "no adapter" means the
/// browser flags are wrong, not that the test does not apply.
pub async fn device(limits: wgpu::Limits) -> Gpu {
    wgpu_gradclip_web::console::init(log::LevelFilter::Info);
    match gpu::open(limits).await {
        Ok(gpu) => gpu,
        Err(e) => panic!("no WebGPU device: {e}; run Chromium with --enable-unsafe-webgpu"),
    }
}

/// SplitMix64: small, seeded and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A word that marks bytes no view covers: a NaN whose payload no
/// arithmetic produces, so any write to it shows.
pub const SENTINEL: u32 = 0x7fc0_5eed;

/// A storage buffer holding `words`, readable back through a copy.
pub fn storage_buffer(gpu: &Gpu, label: &str, words: &[u32]) -> wgpu::Buffer {
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(words),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

/// Copies `buffer` into a mappable one and awaits the map: the browser's
/// only way to read GPU memory, and it must not block.
pub async fn read_words(gpu: &Gpu, buffer: &wgpu::Buffer) -> Vec<u32> {
    let size = buffer.size();
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu_gradclip_web.test_readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu_gradclip_web.test_readback"),
        });
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
    gpu.queue.submit([encoder.finish()]);

    let (tx, rx) = futures::channel::oneshot::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    rx.await
        .expect("map callback dropped")
        .expect("mapping the readback buffer failed");
    let bytes = staging.slice(..).get_mapped_range().expect("mapped range");
    let words = bytemuck::cast_slice(&bytes).to_vec();
    drop(bytes);
    staging.unmap();
    words
}

/// Relative closeness for norms and coefficients; NaN matches NaN and an
/// infinity matches the same infinity.
pub fn close(got: f64, want: f64, rel: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rel * want.abs().max(f64::MIN_POSITIVE)
}

/// Distance in units in the last place between two f32, with +0 and -0
/// equal. Not meaningful for NaN.
pub fn ulps(a: f32, b: f32) -> u64 {
    fn ordered(x: f32) -> i64 {
        let bits = x.to_bits() as i32;
        if bits < 0 {
            -i64::from(bits & 0x7fff_ffff)
        } else {
            i64::from(bits)
        }
    }
    ordered(a).abs_diff(ordered(b))
}

/// Where a view lies: (buffer index, first word, length in words).
pub type ViewAt = (usize, usize, usize);

/// Gradients laid out in buffers as a test describes them, with sentinel
/// words wherever no view reaches.
pub struct Arena {
    pub buffers: Vec<Vec<u32>>,
    /// (group name, its views).
    pub groups: Vec<(String, Vec<ViewAt>)>,
}

impl Arena {
    pub fn new() -> Self {
        Self {
            buffers: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Adds a buffer of `words` sentinel words; returns its index.
    pub fn buffer(&mut self, words: usize) -> usize {
        self.buffers.push(vec![SENTINEL; words]);
        self.buffers.len() - 1
    }

    /// Adds an empty group; returns its index.
    pub fn group(&mut self, name: &str) -> usize {
        self.groups.push((name.to_string(), Vec::new()));
        self.groups.len() - 1
    }

    /// Adds a view of `values` to `group`, stored at `word` in `buffer`.
    pub fn view(&mut self, group: usize, buffer: usize, word: usize, values: &[f32]) {
        let dst = &mut self.buffers[buffer][word..word + values.len()];
        for (d, v) in dst.iter_mut().zip(values) {
            *d = v.to_bits();
        }
        self.groups[group].1.push((buffer, word, values.len()));
    }

    /// The values of one view, as laid out before the clip.
    pub fn values(&self, buffer: usize, word: usize, len: usize) -> &[f32] {
        bytemuck::cast_slice(&self.buffers[buffer][word..word + len])
    }
}

/// Seeded values in [-scale, scale).
pub fn values(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.symmetric() * scale).collect()
}
