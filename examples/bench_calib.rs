use std::time::Instant;
use wgpu_gradclip::toy::native;
use wgpu_gradclip::{ClipConfig, ClipGroup, GradClipper, GradView};
fn main() {
    pollster::block_on(async {
        let (device, queue, _) = native::open_device().await.unwrap();
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 64 << 20,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let clipper = GradClipper::new(&device).unwrap();
        let plan = clipper
            .plan(
                &[ClipGroup::new("a", [GradView::whole(&buf)])],
                &ClipConfig::new(1e30),
            )
            .unwrap();
        for _ in 0..4 {
            let t = Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            plan.record(&mut enc);
            queue.submit([enc.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            println!(
                "norm over 64 MiB: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    });
}
