//! Plans and recording: validating views, allocating the plan's tables and
//! scratch once, and writing dispatches into a caller's command encoder.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::pipelines::PipelineKey;
use crate::plan::{self, Layout, LayoutError, LayoutLimits, ViewSpec};
use crate::report::{self, ClipReport, PowerSum};
use crate::shaders::{norm_kind, GradAccess, Kernel, FIRST_GRAD_BINDING};
use crate::{ClipConfig, ClipGroup, ClipMode, Error, GradClipper, NonFinitePolicy, Norm, Result};

/// Twin of `Params` in `shaders/clip_common.wgsl`.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct Params {
    chunk_base: u32,
    n_chunks: u32,
    grid_x: u32,
    n_groups: u32,
    results_base: u32,
    coef_base: u32,
    group_table_base: u32,
    global_mode: u32,
    error_policy: u32,
    p: f32,
    p_shift: f32,
    max_norm: f32,
    eps: f32,
    clip_value: f32,
    _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<Params>() == 64);

/// A dispatch of one batch of binding windows.
#[derive(Debug)]
struct BatchGpu {
    bind_group: wgpu::BindGroup,
    access: GradAccess,
    grid: (u32, u32),
}

/// Views laid out and bound: what both norm and value clipping record from.
#[derive(Debug)]
struct Bound {
    layout: Layout,
    batches: Vec<BatchGpu>,
    finalize_bind_group: Option<wgpu::BindGroup>,
    scratch: wgpu::Buffer,
    /// Index (in 16-byte entries) of the first group power sum in scratch.
    results_base: u32,
}

fn norm_kind_of(norm: Norm) -> u32 {
    match norm {
        Norm::Inf => norm_kind::INF,
        Norm::L2 => norm_kind::L2,
        Norm::P(1.0) => norm_kind::L1,
        Norm::P(2.0) => norm_kind::L2,
        Norm::P(_) => norm_kind::GENERAL,
    }
}

impl ClipConfig {
    fn validate(&self) -> Result<()> {
        if !(self.max_norm.is_finite() && self.max_norm > 0.0) {
            return Err(Error::InvalidMaxNorm(self.max_norm));
        }
        if let Norm::P(p) = self.norm {
            if !(1.0..=200.0).contains(&p) {
                return Err(Error::InvalidNormOrder(p));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::InvalidEps(self.eps));
        }
        Ok(())
    }
}

impl GradClipper {
    /// Validates `groups` and prepares everything a clip needs: the chunk
    /// table, scratch space, bind groups and pipelines. Nothing is
    /// allocated or compiled after this, however many times the plan is
    /// recorded.
    ///
    /// Errors (no buffer is touched when one is returned):
    /// - [`Error::InvalidMaxNorm`], [`Error::InvalidNormOrder`],
    ///   [`Error::InvalidEps`] for a bad `config`;
    /// - [`Error::MisalignedView`], [`Error::ViewOutOfRange`],
    ///   [`Error::MissingStorageUsage`], [`Error::ForeignBuffer`],
    ///   [`Error::InvalidBuffer`], [`Error::OverlappingViews`] for a bad
    ///   view, naming it;
    /// - [`Error::PlanTooLarge`] beyond 2^24 groups or 2^32 chunks.
    ///
    /// Zero-length views and empty groups are fine: an empty group has norm
    /// 0 and coefficient 1, and a plan with no groups records nothing.
    ///
    /// A buffer from another device, or one whose creation failed or that
    /// was destroyed, is detected through a wgpu error scope,
    /// which resolves at once on native backends; in the browser it is
    /// reported by the browser's own validation instead.
    pub fn plan(&self, groups: &[ClipGroup], config: &ClipConfig) -> Result<ClipPlan> {
        let scopes = DeviceScopes::push(&self.shared.device);
        let plan = self.plan_inner(groups, config);
        let caught = scopes.finish();
        let plan = plan?;
        caught.map(|()| plan)
    }

    fn plan_inner(&self, groups: &[ClipGroup], config: &ClipConfig) -> Result<ClipPlan> {
        config.validate()?;
        let kind = norm_kind_of(config.norm);
        let p = match config.norm {
            Norm::Inf => 0.0,
            Norm::L2 => 2.0,
            Norm::P(p) => p,
        };
        let params = Params {
            p,
            p_shift: report::p_shift(f64::from(p)) as f32,
            max_norm: config.max_norm,
            eps: config.eps,
            global_mode: u32::from(config.mode == ClipMode::Global),
            error_policy: u32::from(config.nonfinite == NonFinitePolicy::Error),
            ..Params::default()
        };
        let bound = self.bind(groups, config.chunk_elements, params, true)?;

        let n = groups.len() as u64;
        let report_size = 2 * (n + 1) * 16;
        let readback = self.shared.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.report_readback"),
            size: report_size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });

        let pipeline = |kernel: Kernel, access: GradAccess, entry: &'static str| {
            self.shared.pipeline(PipelineKey {
                kernel,
                access,
                norm_kind: kind,
                entry,
            })
        };
        let mut norm = HashMap::new();
        let mut scale = HashMap::new();
        for b in &bound.batches {
            norm.entry(b.access)
                .or_insert_with(|| pipeline(Kernel::Norm, b.access, "norm_partials"));
            scale
                .entry(b.access)
                .or_insert_with(|| pipeline(Kernel::Scale, b.access, "scale"));
        }
        let finalize = |entry| pipeline(Kernel::Finalize, GradAccess::Vec4, entry);

        log::debug!(
            "wgpu_gradclip: planned {} groups, {} chunks, {} batches, {} dispatches",
            groups.len(),
            bound.layout.chunks.len(),
            bound.batches.len(),
            bound.layout.clip_dispatches()
        );
        Ok(ClipPlan {
            device: self.shared.device.clone(),
            names: groups.iter().map(|g| g.name.clone()).collect(),
            config: *config,
            norm_pipelines: norm,
            scale_pipelines: scale,
            reduce_pipeline: finalize("reduce_groups"),
            coefficients_pipeline: finalize("compute_coefficients"),
            finalize_pipeline: finalize("finalize"),
            readback,
            report_size,
            report_state: Mutex::new(ReportState::Idle),
            bound,
        })
    }

    /// Prepares value clipping (PyTorch's `clip_grad_value_`): every element
    /// of every view is clamped to `[-clip_value, clip_value]`. NaN stays
    /// NaN. Views are validated as for [`GradClipper::plan`], and
    /// `clip_value` must be greater than 0 ([`Error::InvalidClipValue`]).
    pub fn plan_value(&self, groups: &[ClipGroup], clip_value: f32) -> Result<ValueClipPlan> {
        let scopes = DeviceScopes::push(&self.shared.device);
        let plan = self.plan_value_inner(groups, clip_value);
        let caught = scopes.finish();
        let plan = plan?;
        caught.map(|()| plan)
    }

    fn plan_value_inner(&self, groups: &[ClipGroup], clip_value: f32) -> Result<ValueClipPlan> {
        if clip_value.is_nan() || clip_value <= 0.0 {
            return Err(Error::InvalidClipValue(clip_value));
        }
        let params = Params {
            clip_value,
            ..Params::default()
        };
        let bound = self.bind(groups, crate::DEFAULT_CHUNK_ELEMENTS, params, false)?;
        let mut pipelines = HashMap::new();
        for b in &bound.batches {
            pipelines.entry(b.access).or_insert_with(|| {
                self.shared.pipeline(PipelineKey {
                    kernel: Kernel::ClampValue,
                    access: b.access,
                    norm_kind: norm_kind::L2,
                    entry: "clamp_values",
                })
            });
        }
        Ok(ValueClipPlan { pipelines, bound })
    }

    fn bind(
        &self,
        groups: &[ClipGroup],
        chunk_elements: u32,
        template: Params,
        with_finalize: bool,
    ) -> Result<Bound> {
        let shared = &self.shared;
        let device = &shared.device;

        // Distinct buffers, and validated views.
        let mut buffers: Vec<wgpu::Buffer> = Vec::new();
        // wgpu hashes and compares buffers by identity, not by contents.
        #[allow(clippy::mutable_key_type)]
        let mut index_of: HashMap<wgpu::Buffer, usize> = HashMap::new();
        let mut views = Vec::new();
        let mut first_use: Vec<(usize, usize)> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            for (v, view) in group.views.iter().enumerate() {
                let err_ctx = || (group.name.clone(), v);
                if view.offset % 4 != 0 {
                    let (group, view_ix) = err_ctx();
                    return Err(Error::MisalignedView {
                        group,
                        view: view_ix,
                        offset: view.offset,
                    });
                }
                let size = view.buffer.size();
                let end = view
                    .len
                    .checked_mul(4)
                    .and_then(|b| b.checked_add(view.offset));
                if end.is_none_or(|end| end > size) {
                    let (group, view_ix) = err_ctx();
                    return Err(Error::ViewOutOfRange {
                        group,
                        view: view_ix,
                        start: view.offset,
                        end: end.unwrap_or(u64::MAX),
                        size,
                    });
                }
                if !view.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
                    let (group, view_ix) = err_ctx();
                    return Err(Error::MissingStorageUsage {
                        group,
                        view: view_ix,
                        usage: view.buffer.usage(),
                    });
                }
                let buffer = *index_of.entry(view.buffer.clone()).or_insert_with(|| {
                    buffers.push(view.buffer.clone());
                    first_use.push((g, v));
                    buffers.len() - 1
                });
                // wgpu compares buffers by id, and ids are only unique within
                // one instance: an "equal" buffer of another size or usage is
                // a buffer of another instance's device.
                let known = &buffers[buffer];
                if known.size() != size || known.usage() != view.buffer.usage() {
                    let (group, view_ix) = err_ctx();
                    return Err(Error::ForeignBuffer {
                        group,
                        view: view_ix,
                        message: "it comes from another wgpu instance".into(),
                    });
                }
                views.push(ViewSpec {
                    buffer,
                    offset: view.offset,
                    len: view.len,
                    group: g as u32,
                    view: v,
                });
            }
        }

        let limits = &shared.limits;
        let layout_limits = LayoutLimits {
            max_binding: limits.max_storage_buffer_binding_size,
            offset_alignment: u64::from(limits.min_storage_buffer_offset_alignment),
            slots: shared.slots,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            chunk_elements,
        };
        let sizes: Vec<u64> = buffers.iter().map(|b| b.size()).collect();
        let layout = plan::layout(&views, &sizes, groups.len() as u32, &layout_limits).map_err(
            |e| match e {
                LayoutError::Overlap { first, second } => Error::OverlappingViews {
                    first_group: groups[first.0 as usize].name.clone(),
                    first_view: first.1,
                    second_group: groups[second.0 as usize].name.clone(),
                    second_view: second.1,
                },
                LayoutError::TooLarge(msg) => Error::PlanTooLarge(msg),
            },
        )?;

        // The plan table: chunks, segments, then one (first partial, count)
        // per group. A chunk names its first segment by table index.
        let n_chunks = layout.chunks.len() as u32;
        let mut table: Vec<[u32; 4]> = layout
            .chunks
            .iter()
            .map(|c| [c[0], c[1] + n_chunks, c[2], c[3]])
            .collect();
        table.extend_from_slice(&layout.segments);
        let group_table_base = table.len() as u32;
        table.extend(layout.group_ranges.iter().map(|r| [r[0], r[1], 0, 0]));
        if table.is_empty() {
            table.push([0; 4]);
        }
        let plan_table = init_buffer(
            device,
            "wgpu_gradclip.plan_table",
            bytemuck::cast_slice(&table),
            wgpu::BufferUsages::STORAGE,
        )?;

        let n_groups = groups.len() as u32;
        let results_base = n_chunks;
        let coef_base = results_base + n_groups + 1;
        let scratch = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.scratch"),
            size: u64::from(coef_base + n_groups + 1) * 16,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });

        // One uniform block per batch, plus one for finalize, each at an
        // offset the device accepts for uniform bindings.
        let stride = u64::from(limits.min_uniform_buffer_offset_alignment).max(64);
        let base = Params {
            n_groups,
            results_base,
            coef_base,
            group_table_base,
            ..template
        };
        let mut blocks = vec![0u8; (stride * (layout.batches.len() as u64 + 1)) as usize];
        for (i, b) in layout.batches.iter().enumerate() {
            let p = Params {
                chunk_base: b.chunk_base,
                n_chunks: b.n_chunks,
                grid_x: b.grid.0,
                ..base
            };
            let at = i * stride as usize;
            blocks[at..at + 64].copy_from_slice(bytemuck::bytes_of(&p));
        }
        let fin_at = layout.batches.len() * stride as usize;
        blocks[fin_at..fin_at + 64].copy_from_slice(bytemuck::bytes_of(&base));
        let params = init_buffer(
            device,
            "wgpu_gradclip.params",
            &blocks,
            wgpu::BufferUsages::UNIFORM,
        )?;
        let params_entry = |block: usize| wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params,
                offset: block as u64 * stride,
                size: wgpu::BufferSize::new(64),
            }),
        };

        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let batches: Vec<BatchGpu> = layout
            .batches
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut entries = vec![
                    params_entry(i),
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: plan_table.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: scratch.as_entire_binding(),
                    },
                ];
                for slot in 0..shared.slots {
                    let resource = match b.windows.get(slot as usize) {
                        Some(&w) => {
                            let w = &layout.windows[w];
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &buffers[w.buffer],
                                offset: w.offset,
                                size: wgpu::BufferSize::new(w.size),
                            })
                        }
                        None => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &shared.dummy,
                            offset: u64::from(slot) * shared.dummy_stride,
                            size: wgpu::BufferSize::new(16),
                        }),
                    };
                    entries.push(wgpu::BindGroupEntry {
                        binding: FIRST_GRAD_BINDING + slot,
                        resource,
                    });
                }
                BatchGpu {
                    bind_group: device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("wgpu_gradclip.batch"),
                        layout: &shared.grad_layout,
                        entries: &entries,
                    }),
                    access: b.access,
                    grid: b.grid,
                }
            })
            .collect();
        if let Some(message) = resolve_now(scope.pop()) {
            return Err(self.diagnose_foreign(groups, &buffers, &first_use, message));
        }

        let finalize_bind_group = (with_finalize && n_groups > 0).then(|| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu_gradclip.finalize"),
                layout: &shared.finalize_layout,
                entries: &[
                    params_entry(layout.batches.len()),
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: plan_table.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: scratch.as_entire_binding(),
                    },
                ],
            })
        });

        Ok(Bound {
            layout,
            batches,
            finalize_bind_group,
            scratch,
            results_base,
        })
    }

    /// Finds the first view whose buffer the device rejects.
    fn diagnose_foreign(
        &self,
        groups: &[ClipGroup],
        buffers: &[wgpu::Buffer],
        first_use: &[(usize, usize)],
        message: String,
    ) -> Error {
        let device = &self.shared.device;
        let probe_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpu_gradclip.probe_layout"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        for (buffer, &(g, v)) in buffers.iter().zip(first_use) {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let _ = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu_gradclip.probe"),
                layout: &probe_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(4),
                    }),
                }],
            });
            if let Some(message) = resolve_now(scope.pop()) {
                let group = groups[g].name.clone();
                // wgpu names both cases in its message; there is no typed
                // way to tell them apart through its public API.
                let lower = message.to_lowercase();
                if lower.contains("is invalid") || lower.contains("destroyed") {
                    return Error::InvalidBuffer {
                        group,
                        view: v,
                        message,
                    };
                }
                return Error::ForeignBuffer {
                    group,
                    view: v,
                    message,
                };
            }
        }
        Error::Wgpu(message)
    }
}

/// A buffer filled with `contents` at creation. Unlike wgpu's
/// `create_buffer_init`, a device that cannot map it (a lost device) gives
/// an error rather than a panic.
fn init_buffer(
    device: &wgpu::Device,
    label: &str,
    contents: &[u8],
    usage: wgpu::BufferUsages,
) -> Result<wgpu::Buffer> {
    let size = (contents.len() as u64).div_ceil(4).max(1) * 4;
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: true,
    });
    {
        let mut view = buffer
            .get_mapped_range_mut(..)
            .map_err(|e| Error::Wgpu(e.to_string()))?;
        view.slice(..contents.len()).copy_from_slice(contents);
    }
    buffer.unmap();
    Ok(buffer)
}

/// Error scopes for out-of-memory and internal errors around resource
/// creation, so that they come back as values instead of reaching the
/// device's uncaptured-error handler.
pub(crate) struct DeviceScopes {
    internal: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl DeviceScopes {
    pub(crate) fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        Self { internal, oom }
    }

    /// Pops both scopes (innermost first) and turns a caught error into an
    /// [`Error`].
    pub(crate) fn finish(self) -> Result<()> {
        let internal = resolve_now(self.internal.pop());
        let oom = resolve_now(self.oom.pop());
        if let Some(message) = oom {
            return Err(Error::OutOfMemory(message));
        }
        if let Some(message) = internal {
            return Err(Error::Wgpu(message));
        }
        Ok(())
    }
}

/// Polls an error-scope future once. Native backends resolve it at once; in
/// the browser it is still pending and is treated as "no error".
fn resolve_now(fut: impl std::future::Future<Output = Option<wgpu::Error>>) -> Option<String> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(err) => err.map(|e| e.to_string()),
        std::task::Poll::Pending => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReportState {
    Idle,
    Recorded,
    Reading,
}

/// A validated, allocated gradient-norm clip over a fixed set of views.
///
/// Record it every step with [`ClipPlan::record`]; nothing is allocated or
/// compiled there and nothing is read back. Its norms and coefficients stay
/// on the GPU unless [`ClipPlan::record_report`] and
/// [`ClipPlan::read_report`] are used.
#[derive(Debug)]
pub struct ClipPlan {
    device: wgpu::Device,
    names: Vec<String>,
    config: ClipConfig,
    norm_pipelines: HashMap<GradAccess, wgpu::ComputePipeline>,
    scale_pipelines: HashMap<GradAccess, wgpu::ComputePipeline>,
    reduce_pipeline: wgpu::ComputePipeline,
    coefficients_pipeline: wgpu::ComputePipeline,
    finalize_pipeline: wgpu::ComputePipeline,
    readback: wgpu::Buffer,
    report_size: u64,
    report_state: Mutex<ReportState>,
    bound: Bound,
}

impl ClipPlan {
    /// Records the whole clip: norms, coefficients and scaling, in one
    /// compute pass. Groups whose coefficient is 1 are not written.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        if self.names.is_empty() {
            return;
        }
        let mut pass = self.begin(encoder, "wgpu_gradclip.clip");
        self.dispatch_batches(&mut pass, &self.norm_pipelines);
        self.dispatch_finalize(&mut pass, &self.finalize_pipeline);
        self.dispatch_batches(&mut pass, &self.scale_pipelines);
    }

    /// First half of [`ClipPlan::record`], like PyTorch's `get_total_norm`:
    /// computes each group's power sum, and changes no gradient. The sums
    /// can then be read ([`ClipPlan::read_report`]) or replaced
    /// ([`ClipPlan::write_power_sums`], [`ClipPlan::power_sums_binding`])
    /// before [`ClipPlan::record_clip_with_norms`].
    pub fn record_norms(&self, encoder: &mut wgpu::CommandEncoder) {
        if self.names.is_empty() {
            return;
        }
        let mut pass = self.begin(encoder, "wgpu_gradclip.norms");
        self.dispatch_batches(&mut pass, &self.norm_pipelines);
        self.dispatch_finalize(&mut pass, &self.reduce_pipeline);
    }

    /// Second half, like PyTorch's `clip_grads_with_norm_`: coefficients
    /// from the group power sums currently on the GPU, then scaling.
    pub fn record_clip_with_norms(&self, encoder: &mut wgpu::CommandEncoder) {
        if self.names.is_empty() {
            return;
        }
        let mut pass = self.begin(encoder, "wgpu_gradclip.clip_with_norms");
        self.dispatch_finalize(&mut pass, &self.coefficients_pipeline);
        self.dispatch_batches(&mut pass, &self.scale_pipelines);
    }

    /// Replaces the group power sums on the GPU (one per group, in plan
    /// order), for example with sums combined across devices. Takes effect
    /// at the next submission to `queue`.
    pub fn write_power_sums(&self, queue: &wgpu::Queue, sums: &[PowerSum]) -> Result<()> {
        if sums.len() != self.names.len() {
            return Err(Error::PlanTooLarge(format!(
                "write_power_sums got {} sums for {} groups",
                sums.len(),
                self.names.len()
            )));
        }
        if !sums.is_empty() {
            let offset = u64::from(self.bound.results_base) * 16;
            queue.write_buffer(&self.bound.scratch, offset, bytemuck::cast_slice(sums));
        }
        Ok(())
    }

    /// Where the group power sums live on the GPU: buffer, byte offset and
    /// byte length (16 bytes per group, see [`PowerSum`]). A caller can copy
    /// them out after [`ClipPlan::record_norms`], combine them with its own
    /// collective, and copy them back before
    /// [`ClipPlan::record_clip_with_norms`].
    pub fn power_sums_binding(&self) -> (&wgpu::Buffer, u64, u64) {
        (
            &self.bound.scratch,
            u64::from(self.bound.results_base) * 16,
            self.names.len() as u64 * 16,
        )
    }

    /// Records a copy of this step's norms and coefficients into the plan's
    /// readback buffer. Submit it, then call [`ClipPlan::read_report`].
    ///
    /// Fails with [`Error::ReportPending`] while a previous read is still
    /// mapping the readback buffer.
    pub fn record_report(&self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let mut state = self.report_state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == ReportState::Reading {
            return Err(Error::ReportPending);
        }
        if !self.names.is_empty() {
            let offset = u64::from(self.bound.results_base) * 16;
            encoder.copy_buffer_to_buffer(
                &self.bound.scratch,
                offset,
                &self.readback,
                0,
                self.report_size,
            );
        }
        *state = ReportState::Recorded;
        Ok(())
    }

    /// Reads the report recorded by [`ClipPlan::record_report`], after the
    /// caller has submitted it. Never blocks the browser; on native it polls
    /// the device until the copy has landed.
    pub async fn read_report(&self) -> Result<ClipReport> {
        {
            let mut state = self.report_state.lock().unwrap_or_else(|e| e.into_inner());
            match *state {
                ReportState::Idle => return Err(Error::ReportNotRecorded),
                ReportState::Reading => return Err(Error::ReportPending),
                ReportState::Recorded => *state = ReportState::Reading,
            }
        }
        let result = if self.names.is_empty() {
            Ok(ClipReport::empty())
        } else {
            report::read_buffer(&self.device, &self.readback, self.report_size)
                .await
                .map(|bytes| ClipReport::decode(&bytes, &self.names, self.config.norm))
        };
        *self.report_state.lock().unwrap_or_else(|e| e.into_inner()) = ReportState::Idle;
        result
    }

    /// Records the clip and its report, submits them to `queue`, and reads
    /// the report back: the one-call form of a clip.
    pub async fn run(&self, queue: &wgpu::Queue) -> Result<ClipReport> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu_gradclip.run"),
            });
        self.record(&mut encoder);
        self.record_report(&mut encoder)?;
        queue.submit([encoder.finish()]);
        self.read_report().await
    }

    /// The configuration this plan was made with.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Group names, in plan order.
    pub fn group_names(&self) -> &[String] {
        &self.names
    }

    /// Compute dispatches that [`ClipPlan::record`] issues. It depends on how
    /// many binding windows the views occupy, not on how many views there are.
    pub fn dispatch_count(&self) -> usize {
        if self.names.is_empty() {
            0
        } else {
            self.bound.layout.clip_dispatches()
        }
    }

    fn begin<'e>(
        &self,
        encoder: &'e mut wgpu::CommandEncoder,
        label: &str,
    ) -> wgpu::ComputePass<'e> {
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        })
    }

    fn dispatch_batches(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipelines: &HashMap<GradAccess, wgpu::ComputePipeline>,
    ) {
        for b in &self.bound.batches {
            pass.set_pipeline(&pipelines[&b.access]);
            pass.set_bind_group(0, &b.bind_group, &[]);
            pass.dispatch_workgroups(b.grid.0, b.grid.1, 1);
        }
    }

    fn dispatch_finalize(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipeline: &wgpu::ComputePipeline,
    ) {
        if let Some(bg) = &self.bound.finalize_bind_group {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bg, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
    }
}

/// A validated value clip (`clip_grad_value_`) over a fixed set of views.
#[derive(Debug)]
pub struct ValueClipPlan {
    pipelines: HashMap<GradAccess, wgpu::ComputePipeline>,
    bound: Bound,
}

impl ValueClipPlan {
    /// Records the clamp into `encoder`: one dispatch per batch of bindings.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        if self.bound.batches.is_empty() {
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu_gradclip.clip_value"),
            timestamp_writes: None,
        });
        for b in &self.bound.batches {
            pass.set_pipeline(&self.pipelines[&b.access]);
            pass.set_bind_group(0, &b.bind_group, &[]);
            pass.dispatch_workgroups(b.grid.0, b.grid.1, 1);
        }
    }
}
