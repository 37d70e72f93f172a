//! Opening a WebGPU device in the browser, with errors a person can act on.

use std::fmt;

/// Why no device could be opened.
#[derive(Debug)]
pub enum GpuError {
    /// `navigator.gpu` is missing, or it returned no adapter.
    NoWebGpu,
    /// An adapter was found but refused the device request.
    Device(String),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoWebGpu => f.write_str(
                "this browser offers no WebGPU adapter (navigator.gpu is missing or \
                 requestAdapter() returned null)",
            ),
            GpuError::Device(msg) => write!(f, "the WebGPU adapter refused a device: {msg}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// A device and its queue, with the adapter's description.
#[derive(Debug)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: wgpu::AdapterInfo,
}

impl Gpu {
    /// The adapter's description as the browser gives it (wgpu's browser
    /// backend fills only `name`, from `GPUAdapterInfo.description`, which
    /// may be empty for privacy), marked when it is a software fallback.
    pub fn adapter_name(&self) -> String {
        let name = if self.adapter.name.is_empty() {
            "unnamed WebGPU adapter"
        } else {
            self.adapter.name.as_str()
        };
        if self.adapter.device_type == wgpu::DeviceType::Cpu {
            format!("{name} (software fallback)")
        } else {
            name.to_string()
        }
    }
}

/// Opens a device on the browser's WebGPU adapter.
///
/// `limits` is what the device asks for. WebGPU gives every device at least
/// its default limits, so asking for less than a default (say, a smaller
/// `max_storage_buffer_binding_size`) may be silently raised: read the
/// granted values from `device.limits()`.
pub async fn open(limits: wgpu::Limits) -> Result<Gpu, GpuError> {
    // Checked first because wgpu's browser backend would otherwise fail
    // deeper down with a less helpful message.
    if !wgpu::util::is_browser_webgpu_supported().await {
        return Err(GpuError::NoWebGpu);
    }

    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = wgpu::Instance::new(desc);
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|_| GpuError::NoWebGpu)?;
    let info = adapter.get_info();
    log::info!("wgpu_gradclip_web: adapter {info:?}");

    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu_gradclip_web.device"),
            required_features: wgpu::Features::empty(),
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        })
        .await
        .map_err(|e| GpuError::Device(e.to_string()))?;

    // Errors outside an error scope would otherwise reach only the browser's
    // own warning log; a failed shader or dispatch then looks like a GPU that
    // silently computed zeros.
    device.on_uncaptured_error(std::sync::Arc::new(|e| {
        log::error!("wgpu_gradclip_web: uncaptured WebGPU error: {e}");
    }));
    Ok(Gpu {
        device,
        queue,
        adapter: info,
    })
}
