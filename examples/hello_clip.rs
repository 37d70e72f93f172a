//! A narrated first clip: two clip groups in one gradient buffer, clipped
//! per group on the default adapter, with the report printed.
//!
//! Run with `cargo run --release --example hello_clip`. Choose an adapter
//! with `WGPU_BACKEND=vulkan|gl|metal|dx12` or `WGPU_ADAPTER_NAME=...`.

use wgpu_gradclip::{ClipConfig, ClipGroup, ClipMode, GradClipper, GradView};

fn main() {
    env_logger::init();
    if let Err(e) = pollster::block_on(run()) {
        eprintln!("hello_clip: {e}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // The instance reads WGPU_BACKEND and friends, so the adapter can be
    // chosen without recompiling.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
        .await
        .map_err(|e| {
            format!("no GPU adapter ({e}); on Linux without a GPU, install mesa-vulkan-drivers")
        })?;
    println!("adapter: {}", adapter.get_info().name);

    // WebGPU's default limits are enough: the clipper splits work to fit.
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor::default())
        .await?;

    // One arena holding two parameter tensors' gradients, as an engine
    // that sub-allocates would have them. STORAGE is what the kernels need;
    // COPY_SRC lets us read the result back below.
    let perceiver: Vec<f32> = (0..1000).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    let xattn: Vec<f32> = (0..300).map(|i| ((i % 5) as f32 - 2.0) * 0.5).collect();
    let mut arena = perceiver.clone();
    arena.extend(&xattn);
    let grads = wgpu::util::DeviceExt::create_buffer_init(
        &device,
        &wgpu::util::BufferInitDescriptor {
            label: Some("hello_clip.grads"),
            contents: bytemuck::cast_slice(&arena),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        },
    );

    // Views are (buffer, byte offset, element count); groups are named.
    let groups = [
        ClipGroup::new("perceiver", [GradView::new(&grads, 0, 1000)]),
        ClipGroup::new(
            "gated_cross_attn_layers.0",
            [GradView::new(&grads, 4000, 300)],
        ),
    ];

    // Pipelines and scratch are made here, once; recording them each step
    // costs nothing more.
    let clipper = GradClipper::new(&device)?;
    let config = ClipConfig::new(1.0).mode(ClipMode::PerGroup);
    let plan = clipper.plan(&groups, &config)?;
    println!("dispatches per clip: {}", plan.dispatch_count());

    // A training step would record this into its own encoder between the
    // backward pass and the optimizer; the report copy is optional.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("hello_clip.step"),
    });
    plan.record(&mut encoder);
    plan.record_report(&mut encoder)?;
    queue.submit([encoder.finish()]);

    // The report is read asynchronously, so the same code works in a browser.
    let report = plan.read_report().await?;
    println!("total norm before clipping: {:.4}", report.total_norm);
    for g in &report.groups {
        println!(
            "  {:<28} norm {:>8.4}  coefficient {:.4}  {}",
            g.name,
            g.norm,
            g.coefficient,
            if g.clipped { "clipped" } else { "untouched" }
        );
    }
    Ok(())
}
