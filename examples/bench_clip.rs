//! Clipping against the memory-bandwidth reference and the naive approach,
//! all in one run on the default adapter.
//!
//! ```text
//! cargo run --release --example bench_clip [-- --n 16777216 --reps 15 --json]
//! ```
//!
//! Each case is timed with GPU timestamp queries where the adapter has them
//! and with wall-clock time around submit and wait; the median of `--reps`
//! repetitions after warm-up is reported. Ratios are what to compare across
//! machines: absolute times on a CPU driver mean little.

use std::time::Instant;

use wgpu::util::DeviceExt;
use wgpu_gradclip::{ClipConfig, ClipGroup, ClipMode, GradClipper, GradView};

struct Args {
    n: u64,
    chunk: u32,
    reps: usize,
    json: bool,
    /// Overrides of the options `GradClipper::new` picks for the adapter.
    workgroup_size: Option<u32>,
    lanes: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: 16 << 20,
        chunk: wgpu_gradclip::DEFAULT_CHUNK_ELEMENTS,
        reps: 15,
        json: false,
        workgroup_size: None,
        lanes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--n" => args.n = value("--n")?.parse().map_err(|e| format!("--n: {e}"))?,
            "--reps" => {
                args.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--chunk" => {
                args.chunk = value("--chunk")?
                    .parse()
                    .map_err(|e| format!("--chunk: {e}"))?
            }
            "--json" => args.json = true,
            "--workgroup-size" => {
                let v = value("--workgroup-size")?;
                args.workgroup_size = Some(v.parse().map_err(|e| format!("--workgroup-size: {e}"))?)
            }
            "--lanes" => {
                let v = value("--lanes")?;
                args.lanes = Some(v.parse().map_err(|e| format!("--lanes: {e}"))?)
            }
            "-h" | "--help" => {
                return Err(
                    "usage: bench_clip [--n ELEMENTS] [--reps N] [--chunk ELEMENTS] [--json]\n\
                     \x20                 [--workgroup-size 32|64|128|256] [--lanes N]\n\
                     --workgroup-size and --lanes override what the clipper picks for the adapter"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    if args.n < 64_000 || args.reps == 0 {
        return Err("--n must be at least 64000 and --reps at least 1".into());
    }
    Ok(args)
}

/// Timestamp queries around recorded work, where the adapter has them.
struct Timer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

struct Bench {
    device: wgpu::Device,
    queue: wgpu::Queue,
    timer: Option<Timer>,
}

#[derive(Default)]
struct Sample {
    gpu_ms: Vec<f64>,
    wall_ms: Vec<f64>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

impl Bench {
    fn wait(&self) {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device lost while waiting");
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench_clip"),
            })
    }

    /// Runs `body` in `stages` submissions (a stage may read back between
    /// them), after an untimed `reset`. GPU time is the sum of the stages'
    /// timestamp spans; wall time spans all of them.
    fn time(
        &self,
        reps: usize,
        reset: &dyn Fn(&mut wgpu::CommandEncoder),
        stages: &[&dyn Fn(&mut wgpu::CommandEncoder)],
    ) -> Sample {
        let mut sample = Sample::default();
        for rep in 0..reps + 3 {
            let mut enc = self.encoder();
            reset(&mut enc);
            self.queue.submit([enc.finish()]);
            self.wait();

            let start = Instant::now();
            let mut gpu_ns = 0.0;
            for stage in stages {
                let mut enc = self.encoder();
                if let Some(t) = &self.timer {
                    enc.write_timestamp(&t.queries, 0);
                }
                stage(&mut enc);
                if let Some(t) = &self.timer {
                    enc.write_timestamp(&t.queries, 1);
                    enc.resolve_query_set(&t.queries, 0..2, &t.resolve, 0);
                    enc.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
                }
                self.queue.submit([enc.finish()]);
                self.wait();
                if let Some(t) = &self.timer {
                    let slice = t.readback.slice(..);
                    slice.map_async(wgpu::MapMode::Read, |r| r.expect("map timestamps"));
                    self.wait();
                    let ticks: Vec<u64> =
                        bytemuck::cast_slice(&slice.get_mapped_range().expect("mapped")).to_vec();
                    t.readback.unmap();
                    gpu_ns += ticks[1].saturating_sub(ticks[0]) as f64 * t.period_ns;
                }
            }
            let wall = start.elapsed().as_secs_f64() * 1e3;
            if rep >= 3 {
                sample.wall_ms.push(wall);
                if self.timer.is_some() {
                    sample.gpu_ms.push(gpu_ns / 1e6);
                }
            }
        }
        sample
    }

    fn storage(&self, data: &[f32]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bench_clip.grads"),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }
}

/// Seeded values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// 1000 sizes, log-uniform over three decades, scaled to sum to `n`.
fn mixed_sizes(n: u64) -> Vec<u64> {
    let raw: Vec<f64> = values(1000, 7)
        .iter()
        .map(|v| 10f64.powf(1.5 * f64::from(*v)))
        .collect();
    let sum: f64 = raw.iter().sum();
    let mut sizes: Vec<u64> = raw
        .iter()
        .map(|r| ((r / sum) * n as f64).max(1.0) as u64)
        .collect();
    let total: u64 = sizes.iter().sum();
    sizes[0] += n.saturating_sub(total);
    sizes
}

/// The per-tensor baseline: a norm dispatch per tensor, a host round trip
/// for the total, then a scale dispatch per tensor.
struct Naive {
    sum_pipeline: wgpu::ComputePipeline,
    scale_pipeline: wgpu::ComputePipeline,
    bind_groups: Vec<(wgpu::BindGroup, wgpu::BindGroup, u32)>,
    partials: wgpu::Buffer,
    readback: wgpu::Buffer,
    n_partials: u64,
    coefficient: wgpu::Buffer,
}

impl Naive {
    fn new(b: &Bench, buffers: &[wgpu::Buffer]) -> Naive {
        let module = b.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench_clip.naive"),
            source: wgpu::ShaderSource::Wgsl(include_str!("bench_naive.wgsl").into()),
        });
        let pipeline = |entry| {
            b.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        };
        let sum_pipeline = pipeline("sum_squares");
        let scale_pipeline = pipeline("scale");

        let align = u64::from(b.device.limits().min_uniform_buffer_offset_alignment);
        let mut params = vec![0u8; buffers.len() * align as usize];
        let mut base = 0u32;
        let mut shapes = Vec::new();
        for (i, buf) in buffers.iter().enumerate() {
            let len = (buf.size() / 4) as u32;
            let wgs = len.div_ceil(1024).clamp(1, 64);
            let at = i * align as usize;
            params[at..at + 16].copy_from_slice(bytemuck::cast_slice(&[len, base, wgs, 0]));
            shapes.push(wgs);
            base += wgs;
        }
        let params = b
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bench_clip.naive_params"),
                contents: &params,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let n_partials = u64::from(base);
        let partials = b.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench_clip.naive_partials"),
            size: n_partials * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = b.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench_clip.naive_readback"),
            size: n_partials * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let coefficient = b.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench_clip.naive_coefficient"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // Each entry point has its own automatic layout: the norm binds the
        // partials, the scale binds the coefficient.
        let tensor = |i: usize| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params,
                offset: i as u64 * align,
                size: wgpu::BufferSize::new(16),
            })
        };
        let bind_groups = buffers
            .iter()
            .enumerate()
            .map(|(i, buf)| {
                let make = |pipeline: &wgpu::ComputePipeline, third: wgpu::BindGroupEntry| {
                    b.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("bench_clip.naive_tensor"),
                        layout: &pipeline.get_bind_group_layout(0),
                        entries: &[
                            wgpu::BindGroupEntry {
                                binding: 0,
                                resource: tensor(i),
                            },
                            wgpu::BindGroupEntry {
                                binding: 1,
                                resource: buf.as_entire_binding(),
                            },
                            third,
                        ],
                    })
                };
                let sum = make(
                    &sum_pipeline,
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: partials.as_entire_binding(),
                    },
                );
                let scale = make(
                    &scale_pipeline,
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: coefficient.as_entire_binding(),
                    },
                );
                (sum, scale, shapes[i])
            })
            .collect();
        Naive {
            sum_pipeline,
            scale_pipeline,
            bind_groups,
            partials,
            readback,
            n_partials,
            coefficient,
        }
    }
}

/// Bare shader passes over the same buffer: the least any norm or scale
/// pass can cost on the device.
struct Floors {
    read: wgpu::ComputePipeline,
    scale: wgpu::ComputePipeline,
    read_group: wgpu::BindGroup,
    scale_group: wgpu::BindGroup,
    workgroups: u32,
}

impl Floors {
    fn new(
        b: &Bench,
        grads: &wgpu::Buffer,
        n: u64,
        options: wgpu_gradclip::ClipperOptions,
    ) -> Floors {
        let module = b.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench_clip.floors"),
            source: wgpu::ShaderSource::Wgsl(include_str!("bench_naive.wgsl").into()),
        });
        let workgroups = (n / 4).div_ceil(4096) as u32;
        let out = b.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench_clip.floor_out"),
            size: u64::from(workgroups) * u64::from(options.workgroup_size) * 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let make = |entry: &str| {
            let pipeline = b
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[
                            ("WG", f64::from(options.workgroup_size)),
                            ("LANES", f64::from(options.lanes)),
                        ],
                        ..Default::default()
                    },
                    cache: None,
                });
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: grads.as_entire_binding(),
            }];
            if entry == "read_floor" {
                entries.push(wgpu::BindGroupEntry {
                    binding: 1,
                    resource: out.as_entire_binding(),
                });
            }
            let group = b.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("bench_clip.floor"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            (pipeline, group)
        };
        let (read, read_group) = make("read_floor");
        let (scale, scale_group) = make("scale_floor");
        Floors {
            read,
            scale,
            read_group,
            scale_group,
            workgroups,
        }
    }

    fn record(&self, enc: &mut wgpu::CommandEncoder, pipeline: &wgpu::ComputePipeline) {
        let group = if std::ptr::eq(pipeline, &self.read) {
            &self.read_group
        } else {
            &self.scale_group
        };
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(self.workgroups, 1, 1);
    }
}

fn main() {
    env_logger::init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_clip: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("bench_clip: {e}");
        std::process::exit(2);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .map_err(|e| format!("no GPU adapter ({e}); without a GPU, install mesa-vulkan-drivers"))?;
    let info = adapter.get_info();
    let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    let features = adapter.features() & wanted;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("bench_clip"),
        required_features: features,
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    let timer = (features == wanted).then(|| Timer {
        queries: device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench_clip.timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        }),
        resolve: device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench_clip.resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }),
        readback: device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench_clip.timestamps_readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }),
        period_ns: f64::from(queue.get_timestamp_period()),
    });
    let b = Bench {
        device,
        queue,
        timer,
    };
    let n = args.n;
    let bytes = n * 4;
    let picked = wgpu_gradclip::ClipperOptions::for_adapter(&info);
    let workgroup_size = args.workgroup_size.unwrap_or(picked.workgroup_size);
    let options = wgpu_gradclip::ClipperOptions {
        workgroup_size,
        lanes: args.lanes.unwrap_or(picked.lanes.min(workgroup_size)),
    };
    let clipper = GradClipper::with_options(&b.device, options)?;
    if !args.json {
        eprintln!(
            "adapter: {} ({:?}), N = {n}, {} reps, workgroup size {}, lanes {}",
            info.name, info.backend, args.reps, options.workgroup_size, options.lanes
        );
    }
    let data = values(n as usize, 1);
    let pristine = b.storage(&data);
    let grads = b.storage(&data);
    let copy_dst = b.storage(&data);
    let restore =
        |enc: &mut wgpu::CommandEncoder| enc.copy_buffer_to_buffer(&pristine, 0, &grads, 0, bytes);
    let nothing = |_: &mut wgpu::CommandEncoder| {};

    let mut rows: Vec<(&str, Sample, usize, f64)> = Vec::new();

    let copy = b.time(
        args.reps,
        &nothing,
        &[&|enc| enc.copy_buffer_to_buffer(&grads, 0, &copy_dst, 0, bytes)],
    );
    rows.push(("copy", copy, 0, 2.0));

    // The shader floors: a bare vec4 read pass and a bare vec4 scale pass.
    let floors = Floors::new(&b, &grads, n, clipper.options());
    let s = b.time(
        args.reps,
        &nothing,
        &[&|enc| floors.record(enc, &floors.read)],
    );
    rows.push(("read_floor", s, 1, 1.0));
    let s = b.time(
        args.reps,
        &restore,
        &[&|enc| floors.record(enc, &floors.scale)],
    );
    rows.push(("scale_floor", s, 1, 2.0));

    let whole = [ClipGroup::new("all", [GradView::whole(&grads)])];
    // max_norm far below the norm: every repetition scales (from a fresh copy).
    let active = clipper.plan(&whole, &ClipConfig::new(1e-3).chunk_elements(args.chunk))?;
    let s = b.time(args.reps, &restore, &[&|enc| active.record(enc)]);
    rows.push(("clip_active", s, active.dispatch_count(), 3.0));

    let inactive = clipper.plan(&whole, &ClipConfig::new(1e30).chunk_elements(args.chunk))?;
    let s = b.time(args.reps, &nothing, &[&|enc| inactive.record(enc)]);
    rows.push(("clip_inactive", s, inactive.dispatch_count(), 1.0));

    // 1000 views of mixed sizes in one arena, 8 groups, per-group mode.
    let sizes = mixed_sizes(n);
    let group_of = |i: usize| (i * 7 + i / 3) % 8;
    let mut arena_groups: Vec<ClipGroup> = (0..8)
        .map(|g| ClipGroup::new(format!("group{g}"), []))
        .collect();
    let mut offset = 0;
    for (i, &len) in sizes.iter().enumerate() {
        arena_groups[group_of(i)]
            .views
            .push(GradView::new(&grads, offset * 4, len));
        offset += len;
    }
    let per_group = ClipConfig::new(1e-3)
        .mode(ClipMode::PerGroup)
        .chunk_elements(args.chunk);
    let arena = clipper.plan(&arena_groups, &per_group)?;
    let s = b.time(args.reps, &restore, &[&|enc| arena.record(enc)]);
    rows.push(("arena_1000", s, arena.dispatch_count(), 3.0));

    // The same views, each in a buffer of its own.
    let mut at = 0usize;
    let separate: Vec<wgpu::Buffer> = sizes
        .iter()
        .map(|&len| {
            let buf = b.storage(&data[at..at + len as usize]);
            at += len as usize;
            buf
        })
        .collect();
    let mut buffer_groups: Vec<ClipGroup> = (0..8)
        .map(|g| ClipGroup::new(format!("group{g}"), []))
        .collect();
    for (i, buf) in separate.iter().enumerate() {
        buffer_groups[group_of(i)].views.push(GradView::whole(buf));
    }
    let restore_separate = |enc: &mut wgpu::CommandEncoder| {
        let mut at = 0;
        for buf in &separate {
            enc.copy_buffer_to_buffer(&pristine, at, buf, 0, buf.size());
            at += buf.size();
        }
    };
    let buffers = clipper.plan(&buffer_groups, &per_group)?;
    let s = b.time(args.reps, &restore_separate, &[&|enc| buffers.record(enc)]);
    rows.push(("buffers_1000", s, buffers.dispatch_count(), 3.0));

    // The naive per-tensor approach over the same separate buffers.
    let naive = Naive::new(&b, &separate);
    let norms = |enc: &mut wgpu::CommandEncoder| {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&naive.sum_pipeline);
        for (bg, _, wgs) in &naive.bind_groups {
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(*wgs, 1, 1);
        }
        drop(pass);
        enc.copy_buffer_to_buffer(&naive.partials, 0, &naive.readback, 0, naive.n_partials * 4);
    };
    let scale = |enc: &mut wgpu::CommandEncoder| {
        // The host round trip: read the partials, form the coefficient.
        let slice = naive.readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map partials"));
        b.wait();
        let partials: Vec<f32> =
            bytemuck::cast_slice(&slice.get_mapped_range().expect("mapped")).to_vec();
        naive.readback.unmap();
        let total = partials.iter().map(|&p| f64::from(p)).sum::<f64>().sqrt();
        let c = (1e-3 / (total + 1e-6)).min(1.0) as f32;
        b.queue.write_buffer(
            &naive.coefficient,
            0,
            bytemuck::cast_slice(&[c, 0.0, 0.0, 0.0]),
        );
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&naive.scale_pipeline);
        for (_, bg, wgs) in &naive.bind_groups {
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(*wgs, 1, 1);
        }
    };
    let s = b.time(args.reps, &restore_separate, &[&norms, &scale]);
    rows.push(("naive_1000", s, 2 * separate.len(), 3.0));

    // 1000 views of 64 elements: overhead dominates.
    let small_buf = b.storage(&data[..64_000]);
    let mut small_groups: Vec<ClipGroup> = (0..8)
        .map(|g| ClipGroup::new(format!("group{g}"), []))
        .collect();
    for i in 0..1000u64 {
        small_groups[group_of(i as usize)]
            .views
            .push(GradView::new(&small_buf, i * 256, 64));
    }
    let small = clipper.plan(&small_groups, &per_group)?;
    let restore_small = |enc: &mut wgpu::CommandEncoder| {
        enc.copy_buffer_to_buffer(&pristine, 0, &small_buf, 0, 256_000)
    };
    let s = b.time(args.reps, &restore_small, &[&|enc| small.record(enc)]);
    rows.push(("small_1000", s, small.dispatch_count(), 3.0));

    report(args, &info, clipper.options(), n, &rows, b.timer.is_some());
    Ok(())
}

fn report(
    args: &Args,
    info: &wgpu::AdapterInfo,
    options: wgpu_gradclip::ClipperOptions,
    n: u64,
    rows: &[(&str, Sample, usize, f64)],
    timestamps: bool,
) {
    // Ratios use GPU time where timestamps exist, wall time otherwise.
    let pick = |name: &str| {
        let s = &rows.iter().find(|r| r.0 == name).expect("case exists").1;
        median(&s.gpu_ms).or(median(&s.wall_ms)).unwrap_or(f64::NAN)
    };
    let ratios = [
        (
            "clip_active / copy",
            pick("clip_active") / pick("copy"),
            "<= 1.8",
        ),
        (
            "clip_active / (read_floor + scale_floor)",
            pick("clip_active") / (pick("read_floor") + pick("scale_floor")),
            "close to 1",
        ),
        (
            "clip_inactive / read_floor",
            pick("clip_inactive") / pick("read_floor"),
            "close to 1",
        ),
        (
            "clip_inactive / copy",
            pick("clip_inactive") / pick("copy"),
            "<= 0.7",
        ),
        (
            "arena_1000 / clip_active",
            pick("arena_1000") / pick("clip_active"),
            "<= 1.1",
        ),
        (
            "buffers_1000 / clip_active",
            pick("buffers_1000") / pick("clip_active"),
            "<= 1.5",
        ),
        (
            "naive_1000 / arena_1000",
            pick("naive_1000") / pick("arena_1000"),
            ">= 10",
        ),
    ];
    let fmt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.4}"));
    if args.json {
        let cases: Vec<String> = rows
            .iter()
            .map(|(name, s, dispatches, _)| {
                format!(
                    "{{\"case\":\"{name}\",\"dispatches\":{dispatches},\"gpu_ms\":{},\"wall_ms\":{}}}",
                    fmt(median(&s.gpu_ms)),
                    fmt(median(&s.wall_ms))
                )
            })
            .collect();
        let ratio_json: Vec<String> = ratios
            .iter()
            .map(|(k, v, t)| format!("{{\"ratio\":\"{k}\",\"value\":{v:.4},\"target\":\"{t}\"}}"))
            .collect();
        println!(
            "{{\"adapter\":\"{}\",\"backend\":\"{:?}\",\"n\":{n},\"reps\":{},\"workgroup_size\":{},\"lanes\":{},\"timestamps\":{timestamps},\"cases\":[{}],\"ratios\":[{}]}}",
            info.name.replace('"', "'"),
            info.backend,
            args.reps,
            options.workgroup_size,
            options.lanes,
            cases.join(","),
            ratio_json.join(",")
        );
        return;
    }
    println!("| case | dispatches | GPU ms (median) | wall ms (median) | GB/s moved (GPU) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, s, dispatches, passes) in rows {
        let gpu = median(&s.gpu_ms);
        let bytes = if *name == "small_1000" {
            64_000.0 * 4.0
        } else {
            n as f64 * 4.0
        };
        let gbs = gpu.map(|ms| passes * bytes / (ms * 1e6));
        println!(
            "| {name} | {dispatches} | {} | {:.3} | {} |",
            gpu.map_or("n/a".into(), |v| format!("{v:.3}")),
            median(&s.wall_ms).unwrap_or(f64::NAN),
            gbs.map_or("n/a".into(), |v| format!("{v:.1}"))
        );
    }
    println!();
    println!("| ratio | value | target |");
    println!("| --- | ---: | --- |");
    for (k, v, t) in ratios {
        println!("| {k} | {v:.2} | {t} |");
    }
}
