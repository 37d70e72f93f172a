//! Pipeline creation: every shader module, bind group layout and pipeline is
//! made once per [`GradClipper`] and cached, so planning more groups or
//! recording more steps never compiles anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::shaders::{
    self, GradAccess, Kernel, FIRST_GRAD_BINDING, MAX_GRAD_SLOTS, WORKGROUP_SIZE, WORKGROUP_SIZES,
};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: Kernel,
    pub access: GradAccess,
    pub norm_kind: u32,
    pub entry: &'static str,
}

/// Builds and caches the clipping pipelines for one device.
///
/// Create one per device and keep it: [`GradClipper::plan`] reuses its
/// pipelines for every plan. It holds only a handle to the device, so it is
/// cheap to clone (clones share the cache).
#[derive(Clone, Debug)]
pub struct GradClipper {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub device: wgpu::Device,
    pub limits: wgpu::Limits,
    /// Gradient bindings per dispatch.
    pub slots: u32,
    /// Invocations per workgroup of every kernel.
    pub workgroup_size: u32,
    /// Invocations that walk a chunk side by side (`LANES` in WGSL).
    pub lanes: u32,
    pub grad_layout: wgpu::BindGroupLayout,
    pub finalize_layout: wgpu::BindGroupLayout,
    grad_pipeline_layout: wgpu::PipelineLayout,
    finalize_pipeline_layout: wgpu::PipelineLayout,
    /// Bound to gradient slots a batch does not use, one range per slot.
    pub dummy: wgpu::Buffer,
    /// Bytes between the dummy ranges of consecutive slots.
    pub dummy_stride: u64,
    modules: Mutex<HashMap<(Kernel, GradAccess), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn base_entries() -> Vec<wgpu::BindGroupLayoutEntry> {
    vec![
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: wgpu::BufferSize::new(
                    std::mem::size_of::<crate::record::Params>() as u64,
                ),
            },
            count: None,
        },
        storage_entry(1, true),
        storage_entry(2, false),
    ]
}

/// Tuning of a [`GradClipper`] for one kind of device. The results do not
/// depend on it beyond rounding: every choice is exact to the same
/// tolerance, and any one choice is bit-identical run after run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipperOptions {
    /// Invocations per workgroup: 32, 64, 128 or 256 (the default).
    pub workgroup_size: u32,
    /// How many invocations walk a chunk side by side: a power of two from
    /// 1 to `workgroup_size`. Equal to `workgroup_size` (the default), the
    /// whole workgroup strides each chunk together, as GPUs want. Smaller,
    /// the workgroup splits each chunk into contiguous shares, one per
    /// team of `lanes` invocations, as CPU drivers want: they run one SIMD
    /// batch of invocations at a time, so a team the width of a batch
    /// reads memory front to back.
    pub lanes: u32,
}

impl Default for ClipperOptions {
    fn default() -> Self {
        Self {
            workgroup_size: WORKGROUP_SIZE,
            lanes: WORKGROUP_SIZE,
        }
    }
}

impl ClipperOptions {
    /// Options suited to the adapter; [`GradClipper::new`] uses these.
    ///
    /// On CPU drivers (lavapipe, llvmpipe, SwiftShader): 32 invocations,
    /// because every workgroup barrier switches between the driver's
    /// software threads, so a small tree makes each workgroup cheaper (on
    /// lavapipe, 1,000 views of 64 elements clipped about twice as fast as
    /// with 64 invocations, and 8 times as fast as with 256), in teams as
    /// wide as the driver's SIMD batch (its largest subgroup size, 8 when
    /// the driver does not say). Elsewhere: 256 invocations in one team.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        if info.device_type == wgpu::DeviceType::Cpu {
            let simd = match info.subgroup_max_size {
                n @ 4..=64 if n.is_power_of_two() => n,
                _ => 8,
            };
            Self {
                workgroup_size: 32,
                lanes: simd.min(32),
            }
        } else {
            Self::default()
        }
    }
}

impl GradClipper {
    /// Prepares the bind group layouts for `device`, with the options
    /// [`ClipperOptions::for_adapter`] picks for its adapter. Pipelines are
    /// compiled lazily by [`GradClipper::plan`], once per kernel variant.
    ///
    /// Fails with [`Error::UnsupportedDevice`] when the device allows fewer
    /// than 3 storage buffers per shader stage or fewer than 256 invocations
    /// per workgroup (WebGPU guarantees 8 and 256).
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_options(device, ClipperOptions::for_adapter(&device.adapter_info()))
    }

    /// As [`GradClipper::new`], tuned by `options`. A workgroup size other
    /// than 32, 64, 128 or 256, or above the device's limits, and a `lanes`
    /// that is not a power of two from 1 to the workgroup size, are
    /// [`Error::UnsupportedDevice`].
    pub fn with_options(device: &wgpu::Device, options: ClipperOptions) -> Result<Self> {
        let limits = device.limits();
        let workgroup_size = options.workgroup_size;
        if !WORKGROUP_SIZES.contains(&workgroup_size) {
            return Err(Error::UnsupportedDevice(format!(
                "workgroup size {workgroup_size} is not one of {WORKGROUP_SIZES:?}"
            )));
        }
        let lanes = options.lanes;
        if !lanes.is_power_of_two() || lanes > workgroup_size {
            return Err(Error::UnsupportedDevice(format!(
                "lanes {lanes} is not a power of two from 1 to the workgroup size {workgroup_size}"
            )));
        }
        if limits.max_storage_buffers_per_shader_stage < FIRST_GRAD_BINDING {
            return Err(Error::UnsupportedDevice(format!(
                "needs 3 storage buffers per shader stage, device allows {}",
                limits.max_storage_buffers_per_shader_stage
            )));
        }
        if limits.max_compute_invocations_per_workgroup < workgroup_size
            || limits.max_compute_workgroup_size_x < workgroup_size
        {
            return Err(Error::UnsupportedDevice(format!(
                "needs {workgroup_size} invocations per workgroup, device allows {}",
                limits.max_compute_invocations_per_workgroup
            )));
        }
        // Two storage bindings are the plan table and scratch.
        let slots = (limits.max_storage_buffers_per_shader_stage - 2).min(MAX_GRAD_SLOTS);

        let mut entries = base_entries();
        entries.extend((0..slots).map(|s| storage_entry(FIRST_GRAD_BINDING + s, false)));
        let grad_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpu_gradclip.grad_layout"),
            entries: &entries,
        });
        let finalize_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpu_gradclip.finalize_layout"),
            entries: &base_entries(),
        });
        let grad_pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("wgpu_gradclip.grad_pipeline_layout"),
            bind_group_layouts: &[Some(&grad_layout)],
            immediate_size: 0,
        });
        let finalize_pipeline_layout =
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("wgpu_gradclip.finalize_pipeline_layout"),
                bind_group_layouts: &[Some(&finalize_layout)],
                immediate_size: 0,
            });
        // Unused slots get disjoint ranges of one buffer: WebGPU forbids two
        // writable bindings of a dispatch to overlap.
        let dummy_stride = u64::from(limits.min_storage_buffer_offset_alignment).max(16);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.unused_slots"),
            size: u64::from(slots) * dummy_stride,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        log::debug!("wgpu_gradclip: {slots} gradient bindings per dispatch");

        Ok(Self {
            shared: Arc::new(Shared {
                device: device.clone(),
                limits,
                slots,
                workgroup_size,
                lanes,
                grad_layout,
                finalize_layout,
                grad_pipeline_layout,
                finalize_pipeline_layout,
                dummy,
                dummy_stride,
                modules: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The device this clipper was made for.
    pub fn device(&self) -> &wgpu::Device {
        &self.shared.device
    }

    /// Invocations per workgroup of every kernel.
    pub fn workgroup_size(&self) -> u32 {
        self.shared.workgroup_size
    }

    /// The options this clipper was built with.
    pub fn options(&self) -> ClipperOptions {
        ClipperOptions {
            workgroup_size: self.shared.workgroup_size,
            lanes: self.shared.lanes,
        }
    }

    /// How many gradient buffers (binding windows) one dispatch reads.
    pub fn grad_bindings_per_dispatch(&self) -> u32 {
        self.shared.slots
    }
}

impl Shared {
    pub(crate) fn pipeline(&self, key: PipelineKey) -> wgpu::ComputePipeline {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pipelines.get(&key) {
            return p.clone();
        }
        let module = self.module(key.kernel, key.access);
        let layout = if key.kernel.uses_grads() {
            &self.grad_pipeline_layout
        } else {
            &self.finalize_pipeline_layout
        };
        let label = format!(
            "wgpu_gradclip.{}.{:?}.kind{}",
            key.entry, key.access, key.norm_kind
        );
        log::debug!("wgpu_gradclip: building pipeline {label}");
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(layout),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[
                        ("NORM_KIND", f64::from(key.norm_kind)),
                        ("LANES", f64::from(self.lanes)),
                    ],
                    // Every workgroup variable is written before it is read.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        pipelines.insert(key, pipeline.clone());
        pipeline
    }

    fn module(&self, kernel: Kernel, access: GradAccess) -> wgpu::ShaderModule {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        modules
            .entry((kernel, access))
            .or_insert_with(|| {
                let source = shaders::compose(kernel, access, self.slots, self.workgroup_size);
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("wgpu_gradclip.{kernel:?}.{access:?}")),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
            })
            .clone()
    }
}
